using System.Runtime.CompilerServices;
using PagePool.Diagnostics;
using PagePool.Memory;

namespace PagePool.Pool;

/// <summary>
/// A pool as the Meter sees it: adapts <see cref="PoolAllocator"/>'s public counters (Statistics, InUsePages) to
/// Diagnostics' <see cref="IPoolMetricsSource"/>, so Diagnostics never knows the pool. Each pool gets a name unique
/// in the process ("pagepool-1", "pagepool-2", ...) for the "pool" tag.
/// </summary>
internal sealed class PoolMeterSource : IPoolMetricsSource
{
    // One source per live pool; the table keeps it exactly as long as its pool (the Meter holds it weakly).
    private static readonly ConditionalWeakTable<PoolAllocator, PoolMeterSource> s_sources = new();
    private static int s_lastNumber;

    private readonly WeakReference<PoolAllocator> _pool;

    private PoolMeterSource(PoolAllocator pool)
    {
        _pool = new WeakReference<PoolAllocator>(pool);
        PoolName = $"{pool.Name}-{Interlocked.Increment(ref s_lastNumber)}";
    }

    public string PoolName { get; }

    /// <summary>Start reporting <paramref name="pool"/> through the Meter.</summary>
    internal static void Register(PoolAllocator pool)
    {
        var source = new PoolMeterSource(pool);
        s_sources.AddOrUpdate(pool, source);
        PagePoolMetrics.Register(source);
    }

    /// <summary>Stop reporting <paramref name="pool"/> (it is being disposed).</summary>
    internal static void Unregister(PoolAllocator pool)
    {
        if (s_sources.TryGetValue(pool, out var source))
        {
            PagePoolMetrics.Unregister(source);
            s_sources.Remove(pool);
        }
    }

    public void ReadTypes(List<PoolTypeReading> into)
    {
        if (!_pool.TryGetTarget(out var pool)) return;
        foreach (var group in pool.Statistics().GroupBy(s => (s.Caching, s.Zone)))
            into.Add(new PoolTypeReading(CachingTag(group.Key.Caching), ZoneTag(group.Key.Zone),
                group.Sum(s => s.PooledPages), group.Sum(s => s.Hits), group.Sum(s => s.Misses),
                group.Sum(s => s.TransitionPages), group.Sum(s => s.ReturnedPages)));
    }

    public void ReadInUse(List<PoolInUseReading> into)
    {
        if (!_pool.TryGetTarget(out var pool)) return;
        foreach (var mode in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
            into.Add(new PoolInUseReading(CachingTag(mode), pool.InUsePages(mode)));
    }

    /// <summary>"wb", "wc", "uc".</summary>
    internal static string CachingTag(CachingMode mode) => mode switch
    {
        CachingMode.WriteBack => "wb",
        CachingMode.WriteCombined => "wc",
        _ => "uc",
    };

    /// <summary>"dma32", "normal".</summary>
    internal static string ZoneTag(Zone zone) => zone == Zone.Dma32 ? "dma32" : "normal";
}
