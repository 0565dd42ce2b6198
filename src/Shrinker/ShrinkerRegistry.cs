using System.Diagnostics;

namespace PagePool.Shrinker;

/// <summary>
/// The shrinkers of a process (the kernel's shrinker list) and the one function that asks them for memory,
/// in the shape of Linux's <c>shrink_slab</c> / <c>do_shrink_slab</c>: each shrinker is asked for a share of what
/// it can free, proportional to its count and to the pressure (the priority), divided by its cost to rebuild
/// (<c>seeks</c>), and scanned in batches.
/// </summary>
/// <remarks>
/// A pass runs under one lock, so passes never overlap and <see cref="Unregister"/> waits for a pass in progress
/// to finish before it returns: after it, the shrinker is never called again (what the kernel's shrinker_free
/// guarantees, and what a pool's Dispose needs before it frees what the shrinker walks). A shrinker that throws
/// is reported to the <see cref="Observer"/> and skipped for the rest of the pass; the others still run. An
/// observer that throws is ignored for that report.
/// </remarks>
public sealed class ShrinkerRegistry
{
    /// <summary>The gentlest priority (the kernel's DEF_PRIORITY): a pass asks for count >> 12.</summary>
    public const int DefaultPriority = 12;

    /// <summary>The kernel's DEFAULT_SEEKS: an object costs two seeks to recreate.</summary>
    public const int DefaultSeeks = 2;

    /// <summary>The kernel's SHRINK_BATCH: objects per scan call when the shrinker does not say.</summary>
    public const int DefaultBatch = 128;

    private sealed record Entry(IShrinker Shrinker, int Seeks, long Batch);

    private readonly Lock _scanLock = new();
    private volatile Entry[] _entries = [];

    /// <summary>Told about passes, scans and failures; null for none.</summary>
    public IReclaimObserver? Observer { get; set; }

    /// <summary>Shrinkers registered now.</summary>
    public int Registered => _entries.Length;

    /// <summary>
    /// Add a shrinker. <paramref name="seeks"/> weighs how costly its objects are to recreate (more seeks, smaller
    /// share; 0 means "cheap, take half of what it has each pass", as the kernel does); <paramref name="batch"/> is
    /// how many objects one <see cref="IShrinker.Scan"/> call is asked for.
    /// </summary>
    public void Register(IShrinker shrinker, int seeks = DefaultSeeks, long batch = DefaultBatch)
    {
        ArgumentNullException.ThrowIfNull(shrinker);
        ArgumentOutOfRangeException.ThrowIfNegative(seeks);
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        lock (_scanLock)
        {
            if (Array.Exists(_entries, e => ReferenceEquals(e.Shrinker, shrinker)))
                throw new InvalidOperationException($"The shrinker '{shrinker.Name}' is already registered.");
            _entries = [.. _entries, new Entry(shrinker, seeks, batch)];
        }
    }

    /// <summary>Remove a shrinker; waits for a pass in progress. False when it was not registered.</summary>
    public bool Unregister(IShrinker shrinker)
    {
        lock (_scanLock)
        {
            var left = Array.FindAll(_entries, e => !ReferenceEquals(e.Shrinker, shrinker));
            if (left.Length == _entries.Length) return false;
            _entries = left;
            return true;
        }
    }

    /// <summary>
    /// One reclaim pass at <paramref name="priority"/> (0..12; lower is harder): every shrinker is asked for
    /// <c>(count >> priority) * 4 / seeks</c> objects, at most twice its count, in batches; returns the objects freed.
    /// </summary>
    public long Shrink(int priority, MemoryPressure level = MemoryPressure.Medium)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(priority);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(priority, DefaultPriority);
        long t0 = Stopwatch.GetTimestamp(), freed = 0;
        lock (_scanLock)
        {
            foreach (var e in _entries) freed += ShrinkOne(e, priority);
        }
        long ns = (long)Stopwatch.GetElapsedTime(t0).TotalNanoseconds;
        Tell(o => o.ReclaimPass(level, priority, freed, ns));
        return freed;
    }

    // do_shrink_slab: the share, then batches until it is scanned (or the shrinker has no more to give).
    private long ShrinkOne(Entry e, int priority)
    {
        long asked = 0, freed = 0;
        try
        {
            long freeable = e.Shrinker.Count();
            if (freeable <= 0) return 0; // 0: nothing now; IShrinker.Empty: nothing at all
            // Saturating: a count is an estimate, and one past 2^61 must not wrap the share into nothing.
            long share = freeable >> priority;
            long delta = e.Seeks == 0 ? freeable / 2 : (share > long.MaxValue / 4 ? long.MaxValue : share * 4) / e.Seeks;
            long total = Math.Min(delta, freeable > long.MaxValue / 2 ? long.MaxValue : 2 * freeable);
            // Like the kernel, scan even a share below one batch when it covers all there is.
            while (total >= e.Batch || (total > 0 && total >= freeable))
            {
                long n = Math.Min(e.Batch, total);
                long got = e.Shrinker.Scan(n);
                asked += n;
                freed += got;
                total -= n;
                if (got == 0) break; // it has nothing left: do not spin on it
            }
        }
        catch (Exception error)
        {
            Tell(o => o.ShrinkerFailed(e.Shrinker.Name, error));
        }
        if (asked > 0) Tell(o => o.ShrinkerScanned(e.Shrinker.Name, asked, freed));
        return freed;
    }

    /// <summary>
    /// Tell the observer, if any. An observer that throws is ignored for that call: reporting must never stop
    /// reclaim, and on the reclaim thread its exception would end the process.
    /// </summary>
    internal void Tell(Action<IReclaimObserver> report)
    {
        if (Observer is not { } observer) return;
        try { report(observer); }
        catch (Exception) { /* the observer's own failure is its to report */ }
    }
}
