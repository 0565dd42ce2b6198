namespace PagePool.Diagnostics;

/// <summary>
/// What a pool hands the Meter: its name and its counters, in Diagnostics' own terms (tag values as strings), so
/// that Diagnostics knows no pool type. A pool registers an implementation with
/// <see cref="PagePoolMetrics.Register"/>; the Meter reads it only when a listener collects.
/// </summary>
internal interface IPoolMetricsSource
{
    /// <summary>The value of the "pool" tag: unique among the pools of the process, so no two are summed silently.</summary>
    string PoolName { get; }

    /// <summary>Add one reading per caching mode and zone the pool has seen.</summary>
    void ReadTypes(List<PoolTypeReading> into);

    /// <summary>Add the pages callers hold, one reading per caching mode.</summary>
    void ReadInUse(List<PoolInUseReading> into);
}
