namespace PagePool.Diagnostics;

/// <summary>
/// The counters of a pool's blocks of one caching mode and one zone (all orders together), as the Meter reports
/// them. Pages are 4 KiB pages; blocks are what one allocation handed out (2^order pages).
/// </summary>
/// <param name="Caching">"wb", "wc" or "uc".</param>
/// <param name="Zone">"dma32" or "normal".</param>
/// <param name="PooledPages">Pages kept in the pool now.</param>
/// <param name="Hits">Blocks served from the pool, since it was made.</param>
/// <param name="Misses">Blocks that had to come fresh from the system, since it was made.</param>
/// <param name="TransitionPages">Pages whose caching mode was changed to enter this mode, since it was made.</param>
/// <param name="ReturnedPages">Pages given back to the system (limit trims and shrinker scans), since it was made.</param>
internal readonly record struct PoolTypeReading(
    string Caching, string Zone, long PooledPages, long Hits, long Misses, long TransitionPages, long ReturnedPages);
