namespace PagePool.Tt;

/// <summary>How a <see cref="PageArray"/> treats its pages (TTM's TTM_TT_FLAG_*).</summary>
[Flags]
public enum TtFlags
{
    /// <summary>Pages may hold anything when first populated (the caller overwrites them).</summary>
    None = 0,
    /// <summary>Pages read zero when first populated (TTM_TT_FLAG_ZERO_ALLOC).</summary>
    ZeroAlloc = 1,
    /// <summary>
    /// The pages belong to someone else (an imported buffer, TTM_TT_FLAG_EXTERNAL): they are not charged to the
    /// limits, never swapped, and not given back when the array is destroyed.
    /// </summary>
    External = 2,
    /// <summary>The contents are disposable: under pressure the array is purged (freed without backup), not swapped.</summary>
    Purgeable = 4,
}
