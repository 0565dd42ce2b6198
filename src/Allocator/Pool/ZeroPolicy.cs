namespace PagePool.Pool;

/// <summary>Where pages are cleared. Either way every page a caller receives reads zero unless it opts out.</summary>
public enum ZeroPolicy
{
    /// <summary>Clear pooled pages as they are handed out (the default: the caller gets the lines warm in its cache,
    /// pages the shrinker frees are never cleared for nothing, and <see cref="AllocationFlags.NoClear"/> saves the work).</summary>
    OnAllocate,
    /// <summary>Clear pages as they are given back, as Linux TTM does (ttm_pool_type_give).</summary>
    OnRelease,
}
