namespace PagePool.Pool;

/// <summary>Per-call allocation options.</summary>
[Flags]
public enum AllocationFlags
{
    /// <summary>Pages read zero.</summary>
    None = 0,
    /// <summary>The caller will overwrite every byte: pooled pages may hold a previous owner's data.</summary>
    NoClear = 1,
}

