namespace PagePool.Shrinker;

/// <summary>
/// What the reclaim machinery reports: pressure seen, passes run, what each shrinker was asked for and freed,
/// and shrinkers that failed. This assembly has no EventSource of its own; a host (the allocator's
/// PagePool.Diagnostics.ReclaimEventForwarder) implements this to forward into its event stream and metrics.
/// Calls come from the reclaim thread (or whoever runs a pass) and must be cheap and must not throw.
/// </summary>
public interface IReclaimObserver
{
    /// <summary>A pressure source reported a level other than the one it reported before.</summary>
    void PressureChanged(string source, MemoryPressure level);

    /// <summary>A reclaim pass ran at <paramref name="priority"/> (12 = gentlest, 0 = everything).</summary>
    void ReclaimPass(MemoryPressure level, int priority, long freed, long nanoseconds);

    /// <summary>One shrinker was asked to scan <paramref name="asked"/> objects in a pass and freed <paramref name="freed"/>.</summary>
    void ShrinkerScanned(string shrinker, long asked, long freed);

    /// <summary>A shrinker threw; the pass went on with the others.</summary>
    void ShrinkerFailed(string shrinker, Exception error);
}
