using System.Diagnostics.Metrics;

namespace PagePool.Diagnostics;

/// <summary>
/// The library's one Meter, "PagePool". Every instrument is observable: values are read from the registered pools
/// (<see cref="IPoolMetricsSource"/>) when a listener (dotnet-counters, dotnet-trace, an in-process MeterListener)
/// collects, so the hot path pays nothing. As the runtime's own meters do: up-down counters for amounts that add up
/// across tags (pages pooled, pages in use), counters for totals, no ratios (a reader computes hits / (hits +
/// misses)); every measurement carries the "pool" tag, so several pools are never summed silently, and "caching"
/// (wb, wc, uc) and "zone" (dma32, normal) where they apply. The README's telemetry table lists every instrument.
/// </summary>
public static class PagePoolMetrics
{
    /// <summary>The Meter's name, to pass to dotnet-counters (--counters PagePool).</summary>
    public const string MeterName = "PagePool";

    private static readonly Meter s_meter = new(MeterName, "2.0");
    private static readonly List<WeakReference<IPoolMetricsSource>> s_pools = new();
    private static readonly Lock s_lock = new();

    static PagePoolMetrics()
    {
        s_meter.CreateObservableUpDownCounter("pagepool.pages.pooled", () => PerType(r => r.PooledPages), "{page}",
            "Pages kept in the pool now, by pool, caching mode and zone.");
        s_meter.CreateObservableUpDownCounter("pagepool.pages.in_use", InUse, "{page}",
            "Pages callers hold now, by pool and caching mode.");
        s_meter.CreateObservableCounter("pagepool.pool.hits", () => PerType(r => r.Hits), "{block}",
            "Blocks served from the pool.");
        s_meter.CreateObservableCounter("pagepool.pool.misses", () => PerType(r => r.Misses), "{block}",
            "Blocks that had to come fresh from the system.");
        s_meter.CreateObservableCounter("pagepool.caching.transitions", () => PerType(r => r.TransitionPages), "{page}",
            "Pages whose caching mode was changed into the tagged mode.");
        s_meter.CreateObservableCounter("pagepool.pool.returned", () => PerType(r => r.ReturnedPages), "{page}",
            "Pages the pool gave back to the system: limit trims and shrinker scans together.");
        // Reclaim, as the registry's observer (ReclaimEventForwarder) saw it: tagged by shrinker or pressure source.
        s_meter.CreateObservableCounter("pagepool.reclaim.passes", () => new Measurement<long>(ReclaimTally.Passes), "{pass}",
            "Passes of the reclaim thread over the registered shrinkers.");
        s_meter.CreateObservableCounter("pagepool.reclaim.asked", () => PerShrinker(s => s.Asked), "{page}",
            "Pages the reclaim thread asked each shrinker for.");
        s_meter.CreateObservableCounter("pagepool.reclaim.freed", () => PerShrinker(s => s.Freed), "{page}",
            "Pages each shrinker freed for the reclaim thread.");
        s_meter.CreateObservableGauge("pagepool.pressure.level", PressureLevels, "{level}",
            "The last memory pressure level each source reported: 0 none, 1 low, 2 medium, 3 critical.");
    }

    private static IEnumerable<Measurement<long>> PerShrinker(Func<ReclaimTally.PerShrinker, long> field)
    {
        foreach (var (name, s) in ReclaimTally.Shrinkers)
            yield return new Measurement<long>(field(s), new KeyValuePair<string, object?>("shrinker", name));
    }

    private static IEnumerable<Measurement<long>> PressureLevels()
    {
        foreach (var (source, level) in ReclaimTally.Pressure)
            yield return new Measurement<long>(level, new KeyValuePair<string, object?>("source", source));
    }

    /// <summary>Make a pool's counters visible through the Meter (held weakly: a collected pool drops out).</summary>
    internal static void Register(IPoolMetricsSource pool)
    {
        lock (s_lock)
        {
            s_pools.RemoveAll(w => !w.TryGetTarget(out _));
            s_pools.Add(new WeakReference<IPoolMetricsSource>(pool));
        }
    }

    /// <summary>Stop reporting a pool (when it is disposed).</summary>
    internal static void Unregister(IPoolMetricsSource pool)
    {
        lock (s_lock) s_pools.RemoveAll(w => !w.TryGetTarget(out var p) || p == pool);
    }

    private static List<IPoolMetricsSource> Pools()
    {
        var pools = new List<IPoolMetricsSource>();
        lock (s_lock)
            foreach (var w in s_pools)
                if (w.TryGetTarget(out var p)) pools.Add(p);
        return pools;
    }

    private static IEnumerable<Measurement<long>> PerType(Func<PoolTypeReading, long> field)
    {
        var readings = new List<PoolTypeReading>();
        foreach (var pool in Pools())
        {
            readings.Clear();
            pool.ReadTypes(readings);
            foreach (var r in readings)
                yield return new Measurement<long>(field(r),
                    new KeyValuePair<string, object?>("pool", pool.PoolName),
                    new KeyValuePair<string, object?>("caching", r.Caching),
                    new KeyValuePair<string, object?>("zone", r.Zone));
        }
    }

    private static IEnumerable<Measurement<long>> InUse()
    {
        var readings = new List<PoolInUseReading>();
        foreach (var pool in Pools())
        {
            readings.Clear();
            pool.ReadInUse(readings);
            foreach (var r in readings)
                yield return new Measurement<long>(r.Pages,
                    new KeyValuePair<string, object?>("pool", pool.PoolName),
                    new KeyValuePair<string, object?>("caching", r.Caching));
        }
    }
}
