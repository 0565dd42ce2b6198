using PagePool.Memory;

namespace PagePool.Pool;

/// <summary>Counters of one pool type. Pages are 4 KiB pages (a block of order k counts 2^k).</summary>
/// <param name="Caching">The caching mode of the type.</param>
/// <param name="Order">The block order of the type.</param>
/// <param name="Zone">The zone of the type.</param>
/// <param name="PooledPages">Pages sitting in the pool now.</param>
/// <param name="InUsePages">Pages handed out of this type (hits and fresh blocks) less those given back into it. A
/// caller that switches a held page's caching gives it back into another type, so one type can read negative;
/// <see cref="PoolAllocator.InUsePages"/> gives the true count per caching mode.</param>
/// <param name="Hits">Blocks served from the pool.</param>
/// <param name="Misses">Blocks that had to come fresh from the system.</param>
/// <param name="TransitionPages">Pages whose caching was changed to enter this type.</param>
/// <param name="ReturnedPages">Pages handed back to the system (shrinker or limit).</param>
public readonly record struct PoolTypeStatistics(
    CachingMode Caching, int Order, Zone Zone, long PooledPages, long InUsePages, long Hits, long Misses,
    long TransitionPages, long ReturnedPages);
