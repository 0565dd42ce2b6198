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
