namespace PagePool.Memory;

/// <summary>
/// A handle was misused. Raised before any state changes: the page, its pool and its caller's array are
/// exactly as they were before the call.
/// </summary>
public sealed class PageHandleException : PagePoolException
{
    /// <summary>The offending handle.</summary>
    public PageHandle Handle { get; }

    /// <summary>What was wrong with it.</summary>
    public HandleError Error { get; }

    internal PageHandleException(PageHandle handle, HandleError error, string detail)
        : base($"{Describe(error)}: {handle}. {detail}")
    {
        Handle = handle;
        Error = error;
    }

    private static string Describe(HandleError e) => e switch
    {
        HandleError.Malformed => "Malformed page handle",
        HandleError.Foreign => "Foreign page handle",
        HandleError.Stale => "Stale page handle",
        HandleError.DoubleFree => "Double free of a page",
        HandleError.Mismatch => "Page handle does not match the page",
        _ => "Page in the wrong state",
    };
}
