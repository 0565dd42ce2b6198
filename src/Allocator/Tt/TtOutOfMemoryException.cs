namespace PagePool.Tt;

/// <summary>
/// Populating a buffer would go over a page limit and no other buffer could be swapped out to make room. Nothing
/// was allocated and the buffer is in the state it was before.
/// </summary>
public sealed class TtOutOfMemoryException : PagePoolException
{
    /// <summary>Pages the populate asked for.</summary>
    public long RequestedPages { get; }

    /// <summary>The limit in pages that could not be met (the global or the DMA32 one).</summary>
    public long LimitPages { get; }

    internal TtOutOfMemoryException(long requested, long limit, string which, Exception? inner)
        : base($"Populating {requested} pages would exceed the {which} limit of {limit} pages and no idle buffer could be swapped out; " +
               "raise the limit, destroy or swap out buffers you hold, or unbind them so they can be swapped.", inner ?? new InvalidOperationException(which))
    {
        RequestedPages = requested;
        LimitPages = limit;
    }
}
