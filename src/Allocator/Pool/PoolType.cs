using System.Diagnostics;
using System.Runtime.CompilerServices;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Pool;

/// <summary>
/// The pages of one caching mode x order x zone (ttm_pool_type), in two tiers:
/// <list type="bullet">
/// <item>Per-core caches, for orders up to <see cref="MaxMagazineOrder"/>: each core slot holds a
/// <see cref="CoreCache"/> with a loaded and a previous magazine (the IOVA rcache scheme: swapping the two absorbs
/// alternating take/give at a magazine boundary). A thread takes the whole cache out of its slot with one atomic
/// exchange, works on it privately, and puts it back with a plain store. An empty slot means another thread
/// (preempted or migrated onto the same core) holds it: the thread tries the other slots, then the depot, and
/// never waits. That is one interlocked instruction per hit, no lock, no allocation, no syscall, and it stays
/// correct when threads migrate between cores at any point.</item>
/// <item>The depot: an ABA-safe lock-free stack of non-empty magazines, and one of empty ones. Larger orders have
/// only the depot, like the kernel's per-CPU lists, which hold orders up to PAGE_ALLOC_COSTLY_ORDER only: a
/// magazine of 2 MiB blocks per core would be more memory parked per core than the pool limit's slack allows.</item>
/// </list>
/// A miss in the own core's cache and the depot looks in the other cores' caches before it reports "nothing":
/// a page pooled on one CPU is reachable from every CPU. The type reports depot changes to the pool's
/// <see cref="DepotGauge"/> and never calls up; trimming is the pool's decision.
/// Statistics a hit touches live in the core cache the thread holds exclusively, so they cost plain increments.
/// </summary>
internal sealed class PoolType
{
    /// <summary>The largest order with per-core magazines (the kernel's PAGE_ALLOC_COSTLY_ORDER).</summary>
    internal const int MaxMagazineOrder = 3;

    // One CoreCache reference per 128 bytes (a pair of lines: the adjacent-line prefetcher moves pairs), the first
    // one past the array header's line, so cores exchanging their slots never touch a line another core writes.
    private const int SlotStride = 16;

    internal readonly CachingMode Caching;
    internal readonly int Order;
    internal readonly Zone Zone;

    private readonly DepotGauge _gauge;
    private readonly CoreCache?[]? _slots;   // null: this order has no per-core caches
    private readonly CoreCache[] _caches;    // the same caches, always reachable, for racy counting
    private readonly int _slotMask;
    private readonly MagazineRegistry _registry;
    private readonly MagazineStack _full, _empty;

    private long _depotBlocks, _directTakes, _directGives, _untaken, _misses, _transitions, _returned;

    // Blocks are counted once each: a hit (Taken / _directTakes), a miss (fresh from the system), a give
    // (Given / _directGives) or a return to the system (_returned, blocks the shrinker drained). A take that a
    // failed Allocate gave back is counted in _untaken, so it is neither a hit nor a give.

    internal sealed class CoreCache(Magazine loaded, Magazine previous)
    {
        internal Magazine Loaded = loaded, Previous = previous;
        internal long Taken, Given; // blocks; only the slot's holder writes them
        private CacheLine _pad;     // core caches are allocated together: keep each on its own lines

        /// <summary>Take from the loaded magazine, or from the previous one swapped in. The one take sequence.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        internal bool TryTake(out ulong handle)
        {
            if (Loaded.TryPop(out handle) || (Previous.Count > 0 && Swap().TryPop(out handle)))
            {
                Taken++;
                return true;
            }
            return false;
        }

        /// <summary>Give into the loaded magazine, or into the previous one swapped in when it is empty. The one give sequence.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        internal bool TryGive(ulong handle)
        {
            if (Loaded.TryPush(handle) || (Previous.Count == 0 && Swap().TryPush(handle)))
            {
                Given++;
                return true;
            }
            return false;
        }

        private Magazine Swap()
        {
            (Loaded, Previous) = (Previous, Loaded);
            return Loaded;
        }
    }

    internal PoolType(DepotGauge gauge, CachingMode caching, int order, Zone zone, int slots, int magazineCapacity)
    {
        Debug.Assert(slots > 0 && (slots & (slots - 1)) == 0, "slots are a power of two");
        _gauge = gauge;
        Caching = caching;
        Order = order;
        Zone = zone;
        _registry = new MagazineRegistry(magazineCapacity);
        _full = new MagazineStack(_registry);
        _empty = new MagazineStack(_registry);
        _slotMask = slots - 1;
        if (order > MaxMagazineOrder)
        {
            _caches = [];
            return;
        }
        _slots = new CoreCache?[(slots + 1) * SlotStride];
        _caches = new CoreCache[slots];
        for (int s = 0; s < slots; s++)
            Slot(s) = _caches[s] = new CoreCache(_registry.Create(), _registry.Create());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref CoreCache? Slot(int s) => ref _slots![((s & _slotMask) + 1) * SlotStride];

    /// <summary>Take one pooled block (the hit path). False when no core and no depot of this type has one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryTake(out ulong handle)
    {
        if (_slots is not null)
        {
            int core = Shim.CurrentCpu();
            ref CoreCache? slot = ref Slot(core);
            var cc = Interlocked.Exchange(ref slot, null);
            if (cc is not null && cc.Loaded.TryPop(out handle))
            {
                cc.Taken++;
                Volatile.Write(ref slot, cc);
                return true;
            }
            return TryTakeSlow(core, cc, out handle);
        }
        return TryTakeFromDepot(out handle);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryTakeSlow(int core, CoreCache? cc, out ulong handle)
    {
        if (cc is not null)
        {
            ref CoreCache? slot = ref Slot(core);
            if (cc.Previous.Count == 0 && _full.Pop() is { } full)
            {
                if (PagePoolEventSource.PoolVerboseOn) PagePoolEventSource.Log.PoolRefill((int)Caching, Order, (int)Zone, full.Count);
                Interlocked.Add(ref _depotBlocks, -full.Count);
                _gauge.Add(-(long)full.Count << Order);
                _empty.Push(cc.Previous);
                cc.Previous = full;
            }
            bool hit = cc.TryTake(out handle);
            Volatile.Write(ref slot, cc);
            if (hit) return true;
        }
        return TryTakeFromOtherCores(core, out handle) || TryTakeFromDepot(out handle);
    }

    // Our core's cache is empty or held by another thread: the other cores' caches may hold what we need.
    // Another thread holds that core's cache: it is inside a take or a give, a few instructions long, so wait for it
    // briefly rather than miss a pooled page that is only momentarily out of reach (measured: 0.1% of allocations in
    // a producer/consumer pair went to the system while the producer's magazine held the page). Bounded: a holder
    // that was preempted mid-operation is given up on, and the caller falls back to the depot and then the system.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static CoreCache? AwaitSlot(ref CoreCache? slot)
    {
        var spin = new SpinWait();
        for (int i = 0; i < 32; i++)
        {
            spin.SpinOnce(sleep1Threshold: -1);
            if (Volatile.Read(ref slot) is not null && Interlocked.Exchange(ref slot, null) is { } cc) return cc;
        }
        return null;
    }

    private bool TryTakeFromOtherCores(int core, out ulong handle)
    {
        for (int k = 1; k <= _slotMask; k++)
        {
            ref CoreCache? slot = ref Slot(core + k);
            var cc = Interlocked.Exchange(ref slot, null) ?? AwaitSlot(ref slot);
            if (cc is null) continue;
            bool hit = cc.TryTake(out handle);
            Volatile.Write(ref slot, cc);
            if (hit) return true;
        }
        handle = 0;
        return false;
    }

    // One block straight from a depot magazine.
    private bool TryTakeFromDepot(out ulong handle)
    {
        if (_full.Pop() is not { } full)
        {
            handle = 0;
            return false;
        }
        full.TryPop(out handle);
        Interlocked.Increment(ref _directTakes);
        Interlocked.Decrement(ref _depotBlocks);
        _gauge.Add(-1L << Order);
        if (full.Count > 0) _full.Push(full); else _empty.Push(full);
        return true;
    }

    /// <summary>Put one block into the pool (the release path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Give(ulong handle)
    {
        if (_slots is not null && !_gauge.Tight)
        {
            int core = Shim.CurrentCpu();
            ref CoreCache? slot = ref Slot(core);
            var cc = Interlocked.Exchange(ref slot, null);
            if (cc is not null && cc.Loaded.TryPush(handle))
            {
                cc.Given++;
                Volatile.Write(ref slot, cc);
                return;
            }
            GiveSlow(core, cc, handle);
            return;
        }
        GiveTight(handle);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GiveSlow(int core, CoreCache? cc, ulong handle)
    {
        if (cc is null)
        {
            GiveToDepot(handle); // contended: a magazine of one goes straight to the depot
            return;
        }
        // The loaded magazine is full. With an empty previous one the two swap; otherwise the full one goes to the
        // depot and an empty one is loaded.
        Magazine? spill = null;
        if (cc.Previous.Count > 0)
        {
            spill = cc.Loaded;
            cc.Loaded = _empty.Pop() ?? _registry.Create();
        }
        bool given = cc.TryGive(handle);
        Debug.Assert(given, "an empty magazine was swapped in");
        Volatile.Write(ref Slot(core), cc);
        if (spill is not null) PushFull(spill);
    }

    // Near the limit: every release is counted in the depot, and our core's magazines go there too, so that
    // what the magazines hold shrinks to what the other cores have not touched since.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GiveTight(ulong handle)
    {
        if (_slots is not null)
        {
            int core = Shim.CurrentCpu();
            ref CoreCache? slot = ref Slot(core);
            if (Interlocked.Exchange(ref slot, null) is { } cc)
            {
                Magazine? loaded = cc.Loaded.Count > 0 ? cc.Loaded : null, previous = cc.Previous.Count > 0 ? cc.Previous : null;
                if (loaded is not null) cc.Loaded = _empty.Pop() ?? _registry.Create();
                if (previous is not null) cc.Previous = _empty.Pop() ?? _registry.Create();
                Volatile.Write(ref slot, cc);
                if (loaded is not null) PushFull(loaded);
                if (previous is not null) PushFull(previous);
            }
        }
        GiveToDepot(handle);
    }

    private void GiveToDepot(ulong handle)
    {
        var single = _empty.Pop() ?? _registry.Create();
        single.TryPush(handle);
        Interlocked.Increment(ref _directGives);
        PushFull(single);
    }

    private void PushFull(Magazine m)
    {
        Debug.Assert(m.Count > 0, "only magazines holding blocks go to the depot");
        int blocks = m.Count;
        Interlocked.Add(ref _depotBlocks, blocks);
        _gauge.Add((long)blocks << Order);
        _full.Push(m);
    }

    /// <summary>
    /// Give back a block a failed allocation had taken from this type: into the pool again, counted as if it had
    /// never been taken (neither a hit nor a give).
    /// </summary>
    internal void Untake(ulong handle)
    {
        Interlocked.Increment(ref _untaken);
        GiveToDepot(handle);
        Interlocked.Decrement(ref _directGives);
    }

    /// <summary>
    /// Put back a block the shrinker drained but could not free (the system refused a page-table change): pooled
    /// again, counted as neither a give nor a return.
    /// </summary>
    internal void Restore(ulong handle)
    {
        GiveToDepot(handle);
        Interlocked.Decrement(ref _directGives);
    }

    /// <summary>
    /// Take up to <paramref name="max"/> blocks out of the pool for the shrinker, depot first, then the core
    /// caches of idle slots. Returns how many were written.
    /// </summary>
    internal int Drain(Span<ulong> into, int max)
    {
        Debug.Assert(max <= into.Length);
        int n = 0;
        while (n < max && _full.Pop() is { } m)
        {
            int before = m.Count;
            while (n < max && m.TryPop(out ulong h)) into[n++] = h;
            Interlocked.Add(ref _depotBlocks, m.Count - before);
            _gauge.Add((long)(m.Count - before) << Order);
            if (m.Count > 0) _full.Push(m); else _empty.Push(m);
        }
        for (int s = 0; s < _caches.Length && n < max; s++)
        {
            ref CoreCache? slot = ref Slot(s);
            var cc = Interlocked.Exchange(ref slot, null);
            if (cc is null) continue; // in use right now: leave it
            while (n < max && cc.Previous.TryPop(out ulong h)) into[n++] = h;
            while (n < max && cc.Loaded.TryPop(out ulong h)) into[n++] = h;
            Volatile.Write(ref slot, cc);
        }
        return n;
    }

    /// <summary>
    /// Wait until no thread holds a core cache of this type (each holder is inside a take or a give, a few
    /// instructions long), so that a drain that follows sees every block given before now. For the pool's Dispose.
    /// Bounded (a second in all): a cache whose holder failed mid-operation (out of memory) never comes back.
    /// </summary>
    internal void AwaitIdleSlots()
    {
        long until = Environment.TickCount64 + 1000;
        for (int s = 0; s < _caches.Length; s++)
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref Slot(s)) is null && Environment.TickCount64 < until) spin.SpinOnce();
        }
    }

    /// <summary>Blocks pooled now (racy: a snapshot while others work).</summary>
    internal long PooledBlocks()
    {
        long n = Volatile.Read(ref _depotBlocks);
        foreach (var cc in _caches) n += Volatile.Read(ref cc.Loaded.Count) + Volatile.Read(ref cc.Previous.Count);
        return n;
    }

    /// <summary>Pages in this type's depot (what it reported to the gauge).</summary>
    internal long DepotPages => Volatile.Read(ref _depotBlocks) << Order;

    internal void CountMiss() => Interlocked.Increment(ref _misses);
    internal void CountTransitions(long blocks) => Interlocked.Add(ref _transitions, blocks);
    internal void CountReturned(long blocks) => Interlocked.Add(ref _returned, blocks);

    /// <summary>A caller's block that went straight to the system instead of into the pool.</summary>
    internal void CountGivenToSystem()
    {
        Interlocked.Increment(ref _directGives);
        Interlocked.Increment(ref _returned);
    }

    /// <summary>
    /// Every pooled block, for audits. Only meaningful while no other thread uses the pool: the depot is
    /// emptied and refilled in the same order.
    /// </summary>
    internal void CollectPooled(List<ulong> into)
    {
        var popped = new List<Magazine>();
        while (_full.Pop() is { } m) popped.Add(m);
        long depot = 0;
        for (int i = popped.Count - 1; i >= 0; i--)
        {
            if (popped[i].Count == 0) throw new InvalidOperationException($"An empty magazine sits in the depot of {Caching} order {Order} {Zone}.");
            for (int k = 0; k < popped[i].Count; k++) into.Add(popped[i].Handles[k]);
            depot += popped[i].Count;
            _full.Push(popped[i]);
        }
        if (depot != Volatile.Read(ref _depotBlocks))
            throw new InvalidOperationException($"The depot of {Caching} order {Order} {Zone} holds {depot} blocks but counts {_depotBlocks}.");
        foreach (var cc in _caches)
        {
            for (int k = 0; k < cc.Loaded.Count; k++) into.Add(cc.Loaded.Handles[k]);
            for (int k = 0; k < cc.Previous.Count; k++) into.Add(cc.Previous.Handles[k]);
        }
    }

    /// <summary>A snapshot of this type's counters, in pages.</summary>
    internal PoolTypeStatistics Snapshot()
    {
        long untaken = Volatile.Read(ref _untaken);
        long taken = Volatile.Read(ref _directTakes) - untaken, given = Volatile.Read(ref _directGives);
        foreach (var cc in _caches) { taken += Volatile.Read(ref cc.Taken); given += Volatile.Read(ref cc.Given); }
        long misses = Volatile.Read(ref _misses);
        return new PoolTypeStatistics(Caching, Order, Zone,
            PooledPages: PooledBlocks() << Order,
            InUsePages: (taken + misses - given) << Order,
            Hits: taken,
            Misses: misses,
            TransitionPages: Volatile.Read(ref _transitions) << Order,
            ReturnedPages: Volatile.Read(ref _returned) << Order);
    }
}
