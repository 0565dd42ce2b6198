namespace PagePool.Memory;

/// <summary>How the CPU caches a page (x86 PAT types, as TTM uses them).</summary>
public enum CachingMode : byte
{
    /// <summary>Normal cached memory; the linear-map alias is usable.</summary>
    WriteBack = 0,
    /// <summary>Write-combined: writes bypass the cache (non-temporal stores); the cached alias is unmapped.</summary>
    WriteCombined = 1,
    /// <summary>Uncached: every line written is flushed; the cached alias is unmapped.</summary>
    Uncached = 2,
}
