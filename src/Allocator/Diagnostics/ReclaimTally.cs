using System.Collections.Concurrent;

namespace PagePool.Diagnostics;

/// <summary>
/// What reclaim did, kept for the Meter: passes, pages each shrinker was asked for and freed, and the last level each
/// pressure source reported. Fed by <see cref="ReclaimEventForwarder"/> from the reclaim thread (a slow path: a pass
/// runs at most every tick), read when a listener collects.
/// </summary>
internal static class ReclaimTally
{
    internal sealed class PerShrinker
    {
        internal long Asked, Freed;
    }

    private static long s_passes;
    internal static readonly ConcurrentDictionary<string, PerShrinker> Shrinkers = new(StringComparer.Ordinal);
    internal static readonly ConcurrentDictionary<string, int> Pressure = new(StringComparer.Ordinal);

    internal static long Passes => Volatile.Read(ref s_passes);

    internal static void Pass() => Interlocked.Increment(ref s_passes);

    internal static void Scanned(string shrinker, long asked, long freed)
    {
        var s = Shrinkers.GetOrAdd(shrinker, _ => new PerShrinker());
        Interlocked.Add(ref s.Asked, asked);
        Interlocked.Add(ref s.Freed, freed);
    }

    internal static void Level(string source, int level) => Pressure[source] = level;
}
