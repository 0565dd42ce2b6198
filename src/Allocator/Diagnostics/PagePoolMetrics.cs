using System.Diagnostics.Metrics;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Diagnostics;

/// <summary>
/// The library's one Meter, "PagePool". Every instrument is observable: values are read from the pools'
/// statistics when a listener (dotnet-counters, dotnet-trace, an in-process MeterListener) collects, so the hot
/// path pays nothing. Names are dotted lower case, units UCUM ("{page}", "By", "1").
/// </summary>
public static class PagePoolMetrics
{
    /// <summary>The Meter's name, to pass to dotnet-counters (--counters PagePool).</summary>
    public const string MeterName = "PagePool";

    private static readonly Meter s_meter = new(MeterName, "1.0");
    private static readonly List<WeakReference<PoolAllocator>> s_pools = new();
    private static readonly Lock s_lock = new();

    static PagePoolMetrics()
    {
        s_meter.CreateObservableGauge("pagepool.pages.pooled", () => PerCaching(s => s.PooledPages), "{page}", "Pages kept in the pools, by caching mode.");
        s_meter.CreateObservableGauge("pagepool.pages.in_use", InUse, "{page}", "Pages callers hold, by caching mode.");
        s_meter.CreateObservableCounter("pagepool.pool.hits", () => Total(s => s.Hits), "{block}", "Blocks served from a pool.");
        s_meter.CreateObservableCounter("pagepool.pool.misses", () => Total(s => s.Misses), "{block}", "Blocks that had to come fresh from the system.");
        s_meter.CreateObservableGauge("pagepool.pool.hit_ratio", HitRatio, "1", "Hits / (hits + misses) since the pools were created.");
        s_meter.CreateObservableCounter("pagepool.caching.transitions", () => Total(s => s.TransitionPages), "{page}", "Pages whose caching mode was changed.");
        s_meter.CreateObservableCounter("pagepool.shrinker.freed", () => Total(s => s.ReturnedPages), "{page}", "Pages the pools handed back to the system.");
        s_meter.CreateObservableCounter("pagepool.memory.returned", () => Total(s => s.ReturnedPages) * PhysicalMemory.PageSize, "By", "Bytes the pools handed back to the system.");
    }

    /// <summary>Make a pool's statistics visible through the Meter (held weakly: a collected pool drops out).</summary>
    internal static void Register(PoolAllocator pool)
    {
        lock (s_lock)
        {
            s_pools.RemoveAll(w => !w.TryGetTarget(out _));
            s_pools.Add(new WeakReference<PoolAllocator>(pool));
        }
    }

    /// <summary>Stop reporting a pool (when it is disposed).</summary>
    internal static void Unregister(PoolAllocator pool)
    {
        lock (s_lock) s_pools.RemoveAll(w => !w.TryGetTarget(out var p) || p == pool);
    }

    private static List<PoolTypeStatistics> Snapshot()
    {
        var all = new List<PoolTypeStatistics>();
        lock (s_lock)
            foreach (var w in s_pools)
                if (w.TryGetTarget(out var p)) all.AddRange(p.Statistics());
        return all;
    }

    private static IEnumerable<Measurement<long>> InUse()
    {
        var pools = new List<PoolAllocator>();
        lock (s_lock)
            foreach (var w in s_pools)
                if (w.TryGetTarget(out var p)) pools.Add(p);
        foreach (var mode in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
            yield return new Measurement<long>(pools.Sum(p => p.InUsePages(mode)), new KeyValuePair<string, object?>("caching", Name(mode)));
    }

    private static IEnumerable<Measurement<long>> PerCaching(Func<PoolTypeStatistics, long> field)
    {
        var stats = Snapshot();
        foreach (var mode in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
        {
            long sum = 0;
            foreach (var s in stats) if (s.Caching == mode) sum += field(s);
            yield return new Measurement<long>(sum, new KeyValuePair<string, object?>("caching", Name(mode)));
        }
    }

    private static long Total(Func<PoolTypeStatistics, long> field)
    {
        long sum = 0;
        foreach (var s in Snapshot()) sum += field(s);
        return sum;
    }

    private static double HitRatio()
    {
        long hits = 0, misses = 0;
        foreach (var s in Snapshot()) { hits += s.Hits; misses += s.Misses; }
        return hits + misses == 0 ? 0 : hits / (double)(hits + misses);
    }

    /// <summary>Lower-case tag values: "wb", "wc", "uc".</summary>
    internal static string Name(CachingMode mode) => mode switch
    {
        CachingMode.WriteBack => "wb",
        CachingMode.WriteCombined => "wc",
        _ => "uc",
    };
}
