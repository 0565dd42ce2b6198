using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Shrinker;

namespace PagePool.Pool;

/// <summary>
/// The pool's reclaim, all of it in one place (ttm_pool_shrink and the pool's shrinker callbacks): count what is
/// pooled, scan (free batches round-robin over pool types), trim to the limit after a release, and direct reclaim
/// of one zone when an allocation finds it exhausted. Freed blocks go to the system: caching back to write-back in
/// one batch, memory punched out of the memfd (RSS drops).
/// </summary>
/// <remarks>
/// The pool registers this with a <see cref="ShrinkerRegistry"/> when it is given one; the reclaim thread then
/// calls <see cref="Count"/> and <see cref="Scan"/> under memory pressure, in batches of <see cref="ShrinkBatch"/>.
/// </remarks>
internal sealed unsafe class PoolShrinker : IShrinker
{
    /// <summary>
    /// Pages freed per shrinker step. TTM's TTM_SHRINKER_BATCH is (1 &lt;&lt; (MAX_PAGE_ORDER / 2)) * NR_PAGE_ORDERS,
    /// 32 x 11 = 352 on x86 with 11 orders. Here orders are 0..9: (1 &lt;&lt; 4) x 10 = 160. The formula is kept, not
    /// the number: it scales the batch with the square root of the largest block and with the number of pool types
    /// one round-robin visits, which is what a batch must balance here as there. A batch of order-9 blocks still
    /// frees one whole 512-page block per step (a block is never split).
    /// </summary>
    internal const int ShrinkBatch = (1 << (PhysicalMemory.MaxOrder / 2)) * (PhysicalMemory.MaxOrder + 1);

    private readonly PhysicalMemory _memory;
    private readonly PoolType[] _types;
    private readonly DepotGauge _gauge;
    private readonly int _owner;
    private int _cursor, _trimming;

    internal PoolShrinker(PhysicalMemory memory, PoolType[] types, DepotGauge gauge, int owner)
    {
        _memory = memory;
        _types = types;
        _gauge = gauge;
        _owner = owner;
    }

    /// <inheritdoc/>
    public string Name => "pagepool";

    /// <summary>Pages pooled now in all types, magazines included (racy by nature).</summary>
    internal long Pooled()
    {
        long pages = 0;
        foreach (var t in _types) pages += t.PooledBlocks() << t.Order;
        return pages;
    }

    /// <summary>Pages pooled, or <see cref="IShrinker.Empty"/> when the pool holds none.</summary>
    public long Count() => Pooled() is var n && n > 0 ? n : IShrinker.Empty;

    /// <summary>
    /// Free at least <paramref name="toScan"/> pooled pages when that many exist: batches of
    /// <see cref="ShrinkBatch"/> pages, round-robin over pool types. Returns the pages freed.
    /// </summary>
    public long Scan(long toScan)
    {
        long t0 = PagePoolEventSource.ShrinkerOn ? Stopwatch.GetTimestamp() : 0;
        long freed = 0;
        int idle = 0;
        Span<ulong> batch = stackalloc ulong[ShrinkBatch];
        while (freed < toScan && idle < _types.Length)
        {
            var t = _types[(uint)Interlocked.Increment(ref _cursor) % (uint)_types.Length];
            // Never more blocks than the pages still asked for: trimming to a limit stops at it, give or take
            // the one block that cannot be split.
            long want = Math.Max(1, Math.Min(ShrinkBatch, toScan - freed) >> t.Order);
            int n = t.Drain(batch, (int)want);
            if (n == 0) { idle++; continue; }
            idle = 0;
            FreeDrained(t, batch[..n]);
            freed += (long)n << t.Order;
        }
        if (t0 != 0)
            PagePoolEventSource.Log.ShrinkerScan(Name, toScan, freed, (long)Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
        return freed;
    }

    /// <summary>
    /// Called by the pool after a release while its gauge is tight: trim what is pooled (magazines included)
    /// back to the limit. One thread trims at a time; the others go on (the trimmer sees their pages too).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void TrimToLimit()
    {
        // A release that finds another thread trimming leaves the trim to it; but if that trimmer had already taken
        // its last look, the release's page would keep the pool over its limit until the next release. So after
        // letting go, the trimmer looks once more and trims again if the pool is over, unless its own pass ended
        // because nothing more could be freed (then another pass would find nothing either).
        while (Interlocked.CompareExchange(ref _trimming, 1, 0) == 0)
        {
            bool stuck = false;
            try
            {
                long over = Pooled(), excess = over - _gauge.LimitPages, freed = 0;
                while (excess > 0)
                {
                    long n = Scan(excess);
                    if (n == 0) { stuck = true; break; }
                    freed += n;
                    excess = Pooled() - _gauge.LimitPages;
                }
                if (freed > 0 && PagePoolEventSource.PoolOn) PagePoolEventSource.Log.PoolLimitHit(over, _gauge.LimitPages, freed);
            }
            finally
            {
                Volatile.Write(ref _trimming, 0);
            }
            if (stuck || Pooled() <= _gauge.LimitPages) return;
        }
    }

    /// <summary>
    /// The zone is out of pages: free what the pool keeps of it (any caching, any order), as the kernel's direct
    /// reclaim runs the shrinkers before failing an allocation. Returns the pages freed.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal long ReclaimZone(Zone zone)
    {
        long freed = 0;
        Span<ulong> batch = stackalloc ulong[ShrinkBatch];
        foreach (var t in _types)
        {
            if (t.Zone != zone) continue;
            int n;
            while ((n = t.Drain(batch, Math.Max(1, ShrinkBatch >> t.Order))) > 0)
            {
                FreeDrained(t, batch[..n]);
                freed += (long)n << t.Order;
            }
        }
        return freed;
    }

    // Blocks drained from a pool type go to the system: caching back to WB in one batch, memory punched out.
    private void FreeDrained(PoolType t, Span<ulong> drained)
    {
        Debug.Assert(drained.Length > 0);
#if DEBUG
        foreach (ulong raw in drained)
        {
            ulong w = *_memory.MetaOf(_memory.HandleOf(raw));
            Debug.Assert(PageMeta.State(w) == PageState.Pooled && PageMeta.Owner(w) == _owner && PageMeta.Caching(w) == t.Caching,
                $"a drained block of {t.Caching} order {t.Order} is {PageMeta.State(w)} {PageMeta.Caching(w)} of owner {PageMeta.Owner(w)}");
        }
#endif
        try
        {
            _memory.FreeBlocks(drained, _owner);
        }
        catch
        {
            // Nothing was freed (FreeBlocks is all or nothing): the blocks are pooled still, so back into the pool.
            foreach (ulong raw in drained) t.Restore(raw);
            throw;
        }
        t.CountReturned(drained.Length);
        if (t.Caching != CachingMode.WriteBack) t.CountTransitions(drained.Length);
    }
}
