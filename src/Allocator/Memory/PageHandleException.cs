namespace PagePool.Memory;

/// <summary>What was wrong with a handle.</summary>
public enum HandleError
{
    /// <summary>The null handle, or bits that cannot name a page (an unaligned or out-of-range page).</summary>
    Malformed,
    /// <summary>The handle belongs to another memory space or another pool.</summary>
    Foreign,
    /// <summary>The page went back and was handed out again (or its arena was unmapped); the handle is old.</summary>
    Stale,
    /// <summary>The page was already given back with this very handle.</summary>
    DoubleFree,
    /// <summary>The handle names a live page, but its order or caching is not the one the caller stated.</summary>
    Mismatch,
    /// <summary>The page is in a state that does not allow the operation (for example, it is pooled).</summary>
    WrongState,
}

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

/// <summary>
/// The cached linear-map alias of a write-combined or uncached page was used: the double mapping Linux forbids
/// (shared/seeds/003: dma_alloc_coherent leaving both a cached and an uncached mapping of one page).
/// </summary>
public sealed class DoubleMappingException : PagePoolException
{
    /// <summary>The page whose alias was touched.</summary>
    public PageHandle Handle { get; }

    /// <summary>The page's caching mode at the time.</summary>
    public CachingMode Caching { get; }

    internal DoubleMappingException(PageHandle handle, CachingMode caching)
        : base($"Cached alias of a {caching} page used: {handle}. While a page is write-combined or uncached its " +
               "linear-map alias is unmapped; access it through its view, or set it back to WriteBack first.")
    {
        Handle = handle;
        Caching = caching;
    }
}

/// <summary>A zone has no free block of the order asked for and cannot grow within its capacity.</summary>
public sealed class ZoneExhaustedException : PagePoolException
{
    /// <summary>The zone that ran out.</summary>
    public Zone Zone { get; }

    /// <summary>The order that could not be satisfied.</summary>
    public int Order { get; }

    internal ZoneExhaustedException(Zone zone, int order, long capacityBytes)
        : base($"The {zone} zone has no free block of order {order} and is at its capacity of {capacityBytes >> 20} MiB. " +
               "Free pages, shrink the pools, or configure a larger zone capacity.")
    {
        Zone = zone;
        Order = order;
    }
}
