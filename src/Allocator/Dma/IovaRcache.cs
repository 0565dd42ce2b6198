using System.Runtime.CompilerServices;
using PagePool.Native;

namespace PagePool.Dma;

/// <summary>
/// The IOVA range cache of iova.c: for each size 2^0..2^5 pages, per-CPU pairs of magazines (loaded and previous,
/// 127 ranges each, IOVA_MAG_SIZE) and a depot of full magazines. A hit pops or pushes one pfn in the CPU's loaded
/// magazine; swapping loaded and previous absorbs alternating alloc/free at a boundary; only a full or empty pair
/// touches the depot.
/// </summary>
/// <remarks>
/// Lock-free on the hit path as PagePool's page pool is: a thread takes its CPU's cache out of the slot with one
/// atomic exchange, works on it privately and puts it back with a plain store. A slot found empty is held by a
/// thread preempted or migrated onto that CPU: the caller tries the next slot (never waits). Linux uses a per-CPU
/// spinlock here; an exchange is the user-space equivalent that survives migration at any point.
/// The depot is the slow path and has a lock.
/// </remarks>
internal sealed class IovaRcache
{
    /// <summary>IOVA_MAG_SIZE: 127 pfns, so a magazine with its count fits 1 KiB in Linux.</summary>
    internal const int MagazineSize = 127;
    private const int SlotStride = 16; // one slot per 128 bytes: cores never write each other's lines

    private readonly IovaAllocator _owner;
    private readonly SizeCache[] _sizes = new SizeCache[IovaAllocator.RangeCacheMaxSize];
    private readonly int _slotMask;

    internal sealed class Magazine
    {
        internal readonly ulong[] Pfns = new ulong[MagazineSize];
        internal int Count;
    }

    internal sealed class CpuCache
    {
        internal Magazine Loaded = new(), Previous = new();
    }

    private sealed class SizeCache(int slots)
    {
        internal readonly CpuCache?[] Slots = new CpuCache?[(slots + 1) * SlotStride];
        internal readonly CpuCache[] All = CreateAll(slots);
        internal readonly Stack<Magazine> Depot = new();
        internal readonly Lock DepotLock = new();

        private static CpuCache[] CreateAll(int n)
        {
            var a = new CpuCache[n];
            for (int i = 0; i < n; i++) a[i] = new CpuCache();
            return a;
        }
    }

    internal IovaRcache(IovaAllocator owner, int cpus)
    {
        _owner = owner;
        int slots = 1;
        while (slots < cpus) slots <<= 1;
        _slotMask = slots - 1;
        for (int s = 0; s < _sizes.Length; s++)
        {
            var sc = _sizes[s] = new SizeCache(slots);
            for (int i = 0; i < slots; i++) sc.Slots[(i + 1) * SlotStride] = sc.All[i];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int LogSize(ulong size) => System.Numerics.BitOperations.Log2(size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref CpuCache? Slot(SizeCache sc, int cpu) => ref sc.Slots[((cpu & _slotMask) + 1) * SlotStride];

    /// <summary>iova_rcache_get: a cached pfn at or below the limit, or 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong TryGet(ulong size, ulong limitPfn)
    {
        if (size > 1UL << (IovaAllocator.RangeCacheMaxSize - 1) || (size & (size - 1)) != 0) return 0;
        var sc = _sizes[LogSize(size)];
        int cpu = Shim.CurrentCpu();
        ref CpuCache? slot = ref Slot(sc, cpu);
        var cc = Interlocked.Exchange(ref slot, null);
        if (cc is not null)
        {
            var m = cc.Loaded;
            int n = m.Count - 1;
            if (n >= 0 && m.Pfns[n] <= limitPfn)
            {
                ulong pfn = m.Pfns[n];
                m.Count = n;
                Volatile.Write(ref slot, cc);
                return pfn;
            }
        }
        return TryGetSlow(sc, cpu, cc, limitPfn);
    }

    // Our CPU's cache is held by another thread: try the other CPUs' caches once each, never wait. On success
    // cpu names the slot the cache was taken from (where it must be put back).
    private CpuCache? TakeOtherSlot(SizeCache sc, ref int cpu)
    {
        for (int k = 1; k <= _slotMask; k++)
        {
            cpu++;
            if (Interlocked.Exchange(ref Slot(sc, cpu), null) is { } cc) return cc;
        }
        return null;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong TryGetSlow(SizeCache sc, int cpu, CpuCache? cc, ulong limitPfn)
    {
        if (cc is null)
        {
            cc = TakeOtherSlot(sc, ref cpu);
            if (cc is null) return 0;
        }
        ulong pfn = 0;
        if (!TryPop(cc.Loaded, limitPfn, out pfn))
        {
            if (TryPop(cc.Previous, limitPfn, out pfn))
            {
                (cc.Loaded, cc.Previous) = (cc.Previous, cc.Loaded);
            }
            else
            {
                Magazine? full = null;
                lock (sc.DepotLock)
                    if (sc.Depot.Count > 0) full = sc.Depot.Pop();
                if (full is not null)
                {
                    // The emptied loaded magazine is dropped: Linux frees it too (iova_magazine_free).
                    cc.Loaded = full;
                    if (!TryPop(full, limitPfn, out pfn)) pfn = 0;
                }
            }
        }
        Volatile.Write(ref Slot(sc, cpu), cc);
        return pfn;
    }

    // iova_magazine_pop: the top pfn if it fits the limit, else the first one in the magazine that does.
    private static bool TryPop(Magazine m, ulong limitPfn, out ulong pfn)
    {
        for (int i = m.Count - 1; i >= 0; i--)
        {
            if (m.Pfns[i] > limitPfn) continue;
            pfn = m.Pfns[i];
            m.Pfns[i] = m.Pfns[--m.Count];
            return true;
        }
        pfn = 0;
        return false;
    }

    /// <summary>iova_rcache_insert: keep a freed range in the CPU's cache. False when the size is not cached.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryInsert(ulong pfn, ulong size)
    {
        if (size > 1UL << (IovaAllocator.RangeCacheMaxSize - 1) || (size & (size - 1)) != 0) return false;
        var sc = _sizes[LogSize(size)];
        int cpu = Shim.CurrentCpu();
        ref CpuCache? slot = ref Slot(sc, cpu);
        var cc = Interlocked.Exchange(ref slot, null);
        if (cc is not null)
        {
            var m = cc.Loaded;
            if (m.Count < MagazineSize)
            {
                m.Pfns[m.Count++] = pfn;
                Volatile.Write(ref slot, cc);
                return true;
            }
        }
        InsertSlow(sc, cpu, cc, pfn);
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void InsertSlow(SizeCache sc, int cpu, CpuCache? cc, ulong pfn)
    {
        if (cc is null)
        {
            cc = TakeOtherSlot(sc, ref cpu);
            if (cc is null)
            {
                _owner.Free(pfn); // every cache busy: the tree takes it, as Linux does when the depot is full
                return;
            }
        }
        if (cc.Loaded.Count == MagazineSize)
        {
            if (cc.Previous.Count < MagazineSize)
            {
                (cc.Loaded, cc.Previous) = (cc.Previous, cc.Loaded);
            }
            else
            {
                lock (sc.DepotLock) sc.Depot.Push(cc.Loaded);
                cc.Loaded = new Magazine(); // slow path: one magazine per 127 frees
            }
        }
        cc.Loaded.Pfns[cc.Loaded.Count++] = pfn;
        Volatile.Write(ref Slot(sc, cpu), cc);
    }

    /// <summary>Give every cached pfn back to the tree: every CPU's magazines and the depot.</summary>
    internal void FlushAll()
    {
        foreach (var sc in _sizes)
        {
            for (int s = 0; s <= _slotMask; s++)
            {
                ref CpuCache? slot = ref Slot(sc, s);
                CpuCache? cc;
                var spin = new SpinWait();
                while ((cc = Interlocked.Exchange(ref slot, null)) is null) spin.SpinOnce(); // held for a few instructions only
                Drain(cc.Loaded);
                Drain(cc.Previous);
                Volatile.Write(ref slot, cc);
            }
            lock (sc.DepotLock)
                while (sc.Depot.Count > 0) Drain(sc.Depot.Pop());
        }
    }

    private void Drain(Magazine m)
    {
        for (int i = 0; i < m.Count; i++) _owner.Free(m.Pfns[i]);
        m.Count = 0;
    }

    /// <summary>Ranges sitting in caches (racy; for statistics and tests at rest).</summary>
    internal long CachedCount
    {
        get
        {
            long n = 0;
            foreach (var sc in _sizes)
            {
                foreach (var cc in sc.All) n += cc.Loaded.Count + cc.Previous.Count;
                lock (sc.DepotLock) foreach (var m in sc.Depot) n += m.Count;
            }
            return n;
        }
    }
}
