using System.Collections.Concurrent;
using PagePool.Diagnostics;
using PagePool.Shrinker;

namespace PagePool.Cli.Stress;

/// <summary>
/// What the reclaim thread did in one stress run, per shrinker (the pool's pooled pages, the buffers' LRU), for the
/// summary and its JSON; every report is passed on to the library's event stream and metrics as well.
/// </summary>
internal sealed class ReclaimTotals : IReclaimObserver
{
    private readonly ConcurrentDictionary<string, long> _freed = new(StringComparer.Ordinal);
    private int _highest;

    /// <summary>The highest pressure any source reported.</summary>
    internal MemoryPressure Highest => (MemoryPressure)Volatile.Read(ref _highest);

    /// <summary>Objects (pages) each shrinker freed, by name, sorted.</summary>
    internal IEnumerable<(string Shrinker, long Freed)> Freed => _freed.OrderBy(x => x.Key, StringComparer.Ordinal).Select(x => (x.Key, x.Value));

    public void PressureChanged(string source, MemoryPressure level)
    {
        int l = (int)level, seen;
        while (l > (seen = Volatile.Read(ref _highest)) && Interlocked.CompareExchange(ref _highest, l, seen) != seen) { }
        ReclaimEventForwarder.Instance.PressureChanged(source, level);
    }

    // Passes and pages freed in all are the reclaim thread's own counts (ReclaimThread.Passes, .Freed).
    public void ReclaimPass(MemoryPressure level, int priority, long freed, long nanoseconds)
        => ReclaimEventForwarder.Instance.ReclaimPass(level, priority, freed, nanoseconds);

    public void ShrinkerScanned(string shrinker, long asked, long freed)
    {
        _freed.AddOrUpdate(shrinker, freed, (_, v) => v + freed);
        ReclaimEventForwarder.Instance.ShrinkerScanned(shrinker, asked, freed);
    }

    public void ShrinkerFailed(string shrinker, Exception error) => ReclaimEventForwarder.Instance.ShrinkerFailed(shrinker, error);
}
