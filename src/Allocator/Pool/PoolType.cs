using System.Runtime.CompilerServices;
using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Pool;

/// <summary>
/// The pages of one caching mode x order x zone (ttm_pool_type), in two tiers:
/// <list type="bullet">
/// <item>Per-core caches: each core slot holds a <see cref="CoreCache"/> with a loaded and a previous magazine
/// (the IOVA rcache scheme: swapping the two absorbs alternating take/give at a magazine boundary). A thread takes
/// the whole cache out of its slot with one atomic exchange, works on it privately, and puts it back with a plain
/// store. An empty slot means another thread (preempted or migrated onto the same core) holds it: the thread tries
/// the next slot, then the depot, and never waits. That is one interlocked instruction per hit, no lock, no
/// allocation, no syscall, and it stays correct when threads migrate between cores at any point.</item>
/// <item>The depot: an ABA-safe lock-free stack of non-empty magazines, and one of empty ones.</item>
/// </list>
/// Statistics a hit touches live in the core cache the thread holds exclusively, so they cost plain increments.
/// </summary>
internal sealed class PoolType
{
    // One CoreCache reference per 128 bytes (a pair of lines: the adjacent-line prefetcher moves pairs), the first
    // one past the array header's line, so cores exchanging their slots never touch a line another core writes.
    private const int SlotStride = 16;

    internal readonly CachingMode Caching;
    internal readonly int Order;
    internal readonly Zone Zone;
    internal readonly int Index;

    private readonly PoolAllocator _pool;
    private readonly CoreCache?[] _slots;
    private readonly CoreCache[] _caches; // the same caches, always reachable, for racy counting
    private readonly int _slotMask;
    private readonly MagazineRegistry _registry;
    private readonly MagazineStack _full, _empty;

    private long _depotBlocks, _directTakes, _directGives, _misses, _transitions, _returned;

    // Blocks are counted once each: a hit (Taken / _directTakes), a miss (fresh from the system), a give
    // (Given / _directGives) or a return to the system (_returned, blocks the shrinker drained).

    internal sealed class CoreCache(Magazine loaded, Magazine previous)
    {
        internal Magazine Loaded = loaded, Previous = previous;
        internal long Taken, Given; // blocks; only the slot's holder writes them
        private CacheLine _pad;     // core caches are allocated together: keep each on its own lines
    }

    internal PoolType(PoolAllocator pool, int index, CachingMode caching, int order, Zone zone, int slots, int magazineCapacity)
    {
        _pool = pool;
        Index = index;
        Caching = caching;
        Order = order;
        Zone = zone;
        _registry = new MagazineRegistry(magazineCapacity);
        _full = new MagazineStack(_registry);
        _empty = new MagazineStack(_registry);
        _slotMask = slots - 1;
        _slots = new CoreCache?[(slots + 1) * SlotStride];
        _caches = new CoreCache[slots];
        for (int s = 0; s < slots; s++)
            Slot(s) = _caches[s] = new CoreCache(_registry.Create(), _registry.Create());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref CoreCache? Slot(int s) => ref _slots[((s & _slotMask) + 1) * SlotStride];

    /// <summary>Take one pooled block (the hit path). False when this type has nothing pooled.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryTake(out ulong handle)
    {
        int core = Shim.CurrentCpu();
        ref CoreCache? slot = ref Slot(core);
        var cc = Interlocked.Exchange(ref slot, null);
        if (cc is not null)
        {
            var m = cc.Loaded;
            int n = m.Count - 1;
            if (n >= 0)
            {
                handle = m.Handles[n];
                m.Count = n;
                cc.Taken++;
                Volatile.Write(ref slot, cc);
                return true;
            }
        }
        return TryTakeSlow(core, cc, out handle);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryTakeSlow(int core, CoreCache? cc, out ulong handle)
    {
        if (cc is null)
            return TryTakeContended(core, out handle);
        ref CoreCache? slot = ref Slot(core);
        if (cc.Previous.Count > 0)
        {
            (cc.Loaded, cc.Previous) = (cc.Previous, cc.Loaded);
        }
        else if (_full.Pop() is { } full)
        {
            if (Diagnostics.PagePoolEventSource.PoolVerboseOn) Diagnostics.PagePoolEventSource.Log.PoolRefill((int)Caching, Order, (int)Zone, full.Count);
            Interlocked.Add(ref _depotBlocks, -full.Count);
            _pool.DepotChanged(-full.Count << Order);
            _empty.Push(cc.Loaded);
            cc.Loaded = full;
        }
        else
        {
            Volatile.Write(ref slot, cc);
            handle = 0;
            return false;
        }
        var m = cc.Loaded;
        handle = m.Handles[--m.Count];
        cc.Taken++;
        Volatile.Write(ref slot, cc);
        return true;
    }

    // Our core's slot is held by another thread: try the other slots, then take straight from the depot.
    private bool TryTakeContended(int core, out ulong handle)
    {
        for (int k = 1; k <= _slotMask; k++)
        {
            ref CoreCache? slot = ref Slot(core + k);
            var cc = Interlocked.Exchange(ref slot, null);
            if (cc is null) continue;
            if (cc.Loaded.Count == 0 && cc.Previous.Count > 0) (cc.Loaded, cc.Previous) = (cc.Previous, cc.Loaded);
            var m = cc.Loaded;
            if (m.Count > 0)
            {
                handle = m.Handles[--m.Count];
                cc.Taken++;
                Volatile.Write(ref slot, cc);
                return true;
            }
            Volatile.Write(ref slot, cc);
        }
        if (_full.Pop() is { } full)
        {
            handle = full.Handles[--full.Count];
            Interlocked.Increment(ref _directTakes);
            Interlocked.Decrement(ref _depotBlocks);
            _pool.DepotChanged(-1 << Order);
            if (full.Count > 0) _full.Push(full); else _empty.Push(full);
            return true;
        }
        handle = 0;
        return false;
    }

    /// <summary>Put one block into the pool (the release path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Give(ulong handle)
    {
        int core = Shim.CurrentCpu();
        ref CoreCache? slot = ref Slot(core);
        var cc = Interlocked.Exchange(ref slot, null);
        if (cc is not null)
        {
            var m = cc.Loaded;
            int n = m.Count;
            if (n < m.Capacity)
            {
                m.Handles[n] = handle;
                m.Count = n + 1;
                cc.Given++;
                Volatile.Write(ref slot, cc);
                return;
            }
        }
        GiveSlow(core, cc, handle);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GiveSlow(int core, CoreCache? cc, ulong handle)
    {
        if (cc is null)
        {
            // Contended: a magazine of one goes straight to the depot.
            var single = _empty.Pop() ?? _registry.Create();
            single.Handles[0] = handle;
            single.Count = 1;
            Interlocked.Increment(ref _directGives);
            PushFull(single);
            return;
        }
        ref CoreCache? slot = ref Slot(core);
        Magazine? spill = null;
        if (cc.Previous.Count == 0)
        {
            (cc.Loaded, cc.Previous) = (cc.Previous, cc.Loaded);
        }
        else
        {
            spill = cc.Loaded;
            cc.Loaded = _empty.Pop() ?? _registry.Create();
        }
        var m = cc.Loaded;
        m.Handles[m.Count++] = handle;
        cc.Given++;
        Volatile.Write(ref slot, cc);
        if (spill is not null) PushFull(spill); // after the slot is back: the limit check may shrink
    }

    private void PushFull(Magazine m)
    {
        int blocks = m.Count;
        Interlocked.Add(ref _depotBlocks, blocks);
        _full.Push(m);
        _pool.DepotChanged(blocks << Order);
    }

    /// <summary>
    /// Take up to <paramref name="max"/> blocks out of the pool for the shrinker, depot first, then the core
    /// caches of idle slots. Returns how many were written.
    /// </summary>
    internal int Drain(Span<ulong> into, int max)
    {
        int n = 0;
        while (n < max && _full.Pop() is { } m)
        {
            int before = m.Count;
            while (n < max && m.Count > 0) into[n++] = m.Handles[--m.Count];
            Interlocked.Add(ref _depotBlocks, m.Count - before);
            _pool.DepotChanged((m.Count - before) << Order);
            if (m.Count > 0) _full.Push(m); else _empty.Push(m);
        }
        for (int s = 0; s <= _slotMask && n < max; s++)
        {
            ref CoreCache? slot = ref Slot(s);
            var cc = Interlocked.Exchange(ref slot, null);
            if (cc is null) continue; // in use right now: leave it
            n = DrainMagazine(cc.Previous, into, n, max);
            n = DrainMagazine(cc.Loaded, into, n, max);
            Volatile.Write(ref slot, cc);
        }
        return n;
    }

    private static int DrainMagazine(Magazine m, Span<ulong> into, int n, int max)
    {
        while (n < max && m.Count > 0) into[n++] = m.Handles[--m.Count];
        return n;
    }

    /// <summary>Blocks pooled now (racy: a snapshot while others work).</summary>
    internal long PooledBlocks()
    {
        long n = Volatile.Read(ref _depotBlocks);
        foreach (var cc in _caches) n += Volatile.Read(ref cc.Loaded.Count) + Volatile.Read(ref cc.Previous.Count);
        return n;
    }

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
        for (int i = popped.Count - 1; i >= 0; i--)
        {
            for (int k = 0; k < popped[i].Count; k++) into.Add(popped[i].Handles[k]);
            _full.Push(popped[i]);
        }
        foreach (var cc in _caches)
        {
            for (int k = 0; k < cc.Loaded.Count; k++) into.Add(cc.Loaded.Handles[k]);
            for (int k = 0; k < cc.Previous.Count; k++) into.Add(cc.Previous.Handles[k]);
        }
    }

    /// <summary>A snapshot of this type's counters, in pages.</summary>
    internal PoolTypeStatistics Snapshot()
    {
        long taken = _directTakes, given = _directGives;
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

/// <summary>Counters of one pool type. Pages are 4 KiB pages (a block of order k counts 2^k).</summary>
/// <param name="Caching">The caching mode of the type.</param>
/// <param name="Order">The block order of the type.</param>
/// <param name="Zone">The zone of the type.</param>
/// <param name="PooledPages">Pages sitting in the pool now.</param>
/// <param name="InUsePages">Pages handed out of this type (hits and fresh blocks) less those given back into it. A
/// caller that switches a held page's caching gives it back into another type, so one type can read negative;
/// <see cref="PoolAllocator.InUsePages"/> gives the true count per caching mode.</param>
/// <param name="Hits">Blocks served from the pool.</param>
/// <param name="Misses">Blocks that had to come fresh from the system.</param>
/// <param name="TransitionPages">Pages whose caching was changed to enter this type.</param>
/// <param name="ReturnedPages">Pages handed back to the system (shrinker or limit).</param>
public readonly record struct PoolTypeStatistics(
    CachingMode Caching, int Order, Zone Zone, long PooledPages, long InUsePages, long Hits, long Misses,
    long TransitionPages, long ReturnedPages);
