using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PagePool.Native;

namespace PagePool.Dma;

/// <summary>
/// The IOVA range cache of iova.c: for each size 2^0..2^5 pages, per-CPU pairs of magazines (loaded and previous,
/// 127 ranges each, IOVA_MAG_SIZE) and a depot of full magazines. A hit pops or pushes one pfn in the CPU's loaded
/// magazine; swapping loaded and previous absorbs alternating alloc/free at a boundary; a full pair parks one full
/// magazine with its CPU first (see below), and only a full pair with one parked, or an empty pair with none, touches
/// the depot.
/// </summary>
/// <remarks>
/// Lock-free on the hit path as PagePool's page pool is: a thread takes its CPU's cache out of the slot with one
/// atomic exchange, works on it privately and puts it back with a plain store. A slot found empty is held by a
/// thread preempted or migrated onto that CPU: the caller tries the next slot (never waits). Linux uses a per-CPU
/// spinlock here; an exchange is the user-space equivalent that survives migration at any point.
/// The depot is the slow path and has a lock. Three things differ from Linux there, all for CPUs sharing one domain.
/// Each CPU parks one full magazine of its own before it pushes to the depot, and takes it back before it pops: a
/// flush queue of 250 entries against a CPU's 254 cached ranges makes a CPU holding a few more ranges than a flush
/// returns push one magazine and pop one on every flush, and with one depot for all CPUs each push and pop moved the
/// depot's lock and lists between the CPUs (the parked magazine alone did not close the gap between one domain
/// shared by two CPUs and two domains; what did is in <see cref="FlushQueue"/>'s remarks and <see cref="RoomArena"/>).
/// A CPU popping the depot gets back a magazine
/// it pushed itself when one is near the top (the IOVAs in it were last mapped by this CPU, so their page-table lines
/// are in its cache, not the other CPU's). Emptied magazines are kept as spares for the next push instead of being
/// freed and allocated again (no garbage on the depot path; beyond a few spares an emptied magazine is dropped and
/// its room goes back to its arena). A full flush of the caches empties the parked magazines
/// too, so no range is held back from an allocation that would otherwise fail.
/// </remarks>
internal sealed unsafe class IovaRcache
{
    /// <summary>IOVA_MAG_SIZE: 127 pfns, so a magazine with its count fits 1 KiB in Linux.</summary>
    internal const int MagazineSize = 127;
    private const int SlotStride = 16; // one slot per 128 bytes: cores never write each other's lines
    private const int DepotSearch = 4;  // how far below the depot's top a CPU looks for a magazine of its own

    private readonly IovaAllocator _owner;
    private readonly SizeCache[] _sizes = new SizeCache[IovaAllocator.RangeCacheMaxSize];
    private readonly RoomArena[] _rooms; // per CPU slot: where the magazines that CPU creates keep their ranges
    private readonly int _slotMask;

    // Per-CPU objects keep their fields 64 bytes away from both ends (explicit layout, 192 bytes): a magazine's
    // count is written on every hit, and the GC may place another CPU's magazine or cache right beside it.
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    internal sealed class Magazine(RoomArena rooms)
    {
        [FieldOffset(64)] internal readonly ulong* Pfns = rooms.Take(); // MagazineSize of them
        [FieldOffset(72)] internal int Count;
        [FieldOffset(76)] internal int PushedBy; // the CPU slot that put it in the depot
        // The arena its room came from: keeps the room's pages alive as long as the magazine is, and takes the room
        // back when the magazine is dropped.
        [FieldOffset(80)] internal readonly RoomArena Rooms = rooms;
        [FieldOffset(184)] private readonly long _end; // the JIT ignores Size on a class: a last field makes the room
    }

    /// <summary>
    /// Rooms for the magazines one CPU creates: 1 KiB each, carved from pages that hold nothing but this arena's
    /// rooms (<see cref="PagePrivate"/>). A flush pushes 250 ranges in a row and the maps pop them in a row:
    /// prefetchers follow such runs to the end of the page, and with the magazines in ordinary arrays, allocated one
    /// CPU after the other, that was often into the next CPU's magazine. A magazine keeps its room wherever the depot
    /// takes it (so after depot traffic a CPU may use a room on another CPU's pages); a dropped magazine gives its room
    /// back for the next one, so the arena holds at most the most magazines this CPU ever had alive at once.
    /// </summary>
    internal sealed class RoomArena
    {
        private const int RoomUlongs = 128, RoomsPerChunk = 16; // 16 KiB of rooms a chunk
        private readonly List<PagePrivate> _chunks = [];
        private readonly Stack<nint> _free = new();
        private readonly Lock _lock = new();
        private int _used = RoomsPerChunk;

        internal ulong* Take()
        {
            lock (_lock)
            {
                if (_free.TryPop(out nint room)) return (ulong*)room;
                if (_used == RoomsPerChunk)
                {
                    _chunks.Add(new PagePrivate(RoomsPerChunk * RoomUlongs));
                    _used = 0;
                }
                return _chunks[^1].Start + _used++ * RoomUlongs;
            }
        }

        /// <summary>Take back the room of a magazine that is being dropped (nothing may use it afterwards).</summary>
        internal void Give(ulong* room)
        {
            lock (_lock) _free.Push((nint)room);
        }

        /// <summary>Chunks allocated so far (tests: the arena does not grow while magazines are recycled).</summary>
        internal int Chunks
        {
            get { lock (_lock) return _chunks.Count; }
        }
    }

    [StructLayout(LayoutKind.Explicit, Size = 192)]
    internal sealed class CpuCache(RoomArena rooms)
    {
        [FieldOffset(64)] internal Magazine Loaded = new(rooms);
        [FieldOffset(72)] internal Magazine Previous = new(rooms);
        [FieldOffset(80)] internal Magazine? Parked; // full, or null: this CPU's own overflow, before the depot
        [FieldOffset(88)] internal Magazine? Spare;  // empty, or null: the magazine the parked one replaced
        [FieldOffset(184)] private readonly long _end;
    }

    private sealed class SizeCache(RoomArena[] rooms)
    {
        internal readonly CpuCache?[] Slots = new CpuCache?[(rooms.Length + 1) * SlotStride];
        internal readonly CpuCache[] All = CreateAll(rooms);
        internal readonly List<Magazine> Depot = new(4);  // full magazines, the newest last
        internal readonly Stack<Magazine> Spare = new(4); // emptied ones, for the next push
        internal readonly Lock DepotLock = new();

        private static CpuCache[] CreateAll(RoomArena[] rooms)
        {
            var a = new CpuCache[rooms.Length];
            for (int i = 0; i < a.Length; i++) a[i] = new CpuCache(rooms[i]);
            return a;
        }
    }

    internal IovaRcache(IovaAllocator owner, int cpus)
    {
        _owner = owner;
        int slots = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, cpus));
        _slotMask = slots - 1;
        _rooms = new RoomArena[slots];
        for (int i = 0; i < slots; i++) _rooms[i] = new RoomArena();
        for (int s = 0; s < _sizes.Length; s++)
        {
            var sc = _sizes[s] = new SizeCache(_rooms);
            for (int i = 0; i < slots; i++) sc.Slots[(i + 1) * SlotStride] = sc.All[i];
        }
    }

    // Sizes 2^0..2^5 pages have a cache; any other goes to the tree.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsCachedSize(ulong size) => size <= 1UL << (IovaAllocator.RangeCacheMaxSize - 1) && (size & (size - 1)) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int LogSize(ulong size) => System.Numerics.BitOperations.Log2(size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref CpuCache? Slot(SizeCache sc, int cpu) => ref sc.Slots[((cpu & _slotMask) + 1) * SlotStride];

    /// <summary>iova_rcache_get: a cached pfn at or below the limit, or 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong TryGet(ulong size, ulong limitPfn)
    {
        if (!IsCachedSize(size)) return 0;
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
        // __iova_rcache_get: only an empty loaded magazine is replaced, by the previous one, else this CPU's parked
        // one, else a full one from the depot. A loaded magazine whose ranges all lie above the limit stays loaded
        // and the caller goes to the tree: replacing it would drop (or recycle as a spare) a magazine that still
        // holds ranges.
        if (cc.Loaded.Count == 0)
        {
            if (cc.Previous.Count > 0) (cc.Loaded, cc.Previous) = (cc.Previous, cc.Loaded);
            else if (cc.Parked is { } parked) (cc.Spare, cc.Loaded, cc.Parked) = (cc.Loaded, parked, null);
            else if (PopDepot(sc, cpu, cc.Loaded) is { } full) cc.Loaded = full;
        }
        TryPop(cc.Loaded, limitPfn, out ulong pfn);
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
        if (!IsCachedSize(size)) return false;
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
        Put(sc, cpu, cc, pfn);
        Volatile.Write(ref Slot(sc, cpu), cc);
    }

    // iova_magazine_push into a held cache: the loaded magazine, else the previous one (swapped in), else the full
    // loaded one is parked (when this CPU has none parked) or goes to the depot, and an empty one takes its place.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Put(SizeCache sc, int cpu, CpuCache cc, ulong pfn)
    {
        var m = cc.Loaded;
        if (m.Count == MagazineSize)
        {
            if (cc.Previous.Count < MagazineSize) (cc.Loaded, cc.Previous) = (cc.Previous, cc.Loaded);
            else if (cc.Parked is null) (cc.Parked, cc.Loaded, cc.Spare) = (m, cc.Spare ?? new Magazine(_rooms[cpu & _slotMask]), null);
            else cc.Loaded = PushDepot(sc, cpu, m);
            m = cc.Loaded;
        }
        Debug.Assert(m.Count < MagazineSize, "a magazine is pushed only below its size: the room has no bounds check");
        m.Pfns[m.Count++] = pfn;
    }

    /// <summary>
    /// Free a flush queue's ranges (fq_ring_free) into the cache of <paramref name="cpu"/> (the CPU whose queue they
    /// were in, not necessarily the caller's), holding each size's cache once for the whole batch instead of once per
    /// range. When that cache is held right now, another CPU's takes them, as for a single free.
    /// </summary>
    internal void InsertBatch(ReadOnlySpan<ulong> pfns, ReadOnlySpan<ulong> pages, int cpu)
    {
        int at = cpu;
        SizeCache? held = null;
        CpuCache? cc = null;
        for (int i = 0; i < pfns.Length; i++)
        {
            ulong size = IovaAllocator.RoundSize(pages[i]);
            if (!IsCachedSize(size))
            {
                _owner.Free(pfns[i]);
                continue;
            }
            var sc = _sizes[LogSize(size)];
            if (sc != held)
            {
                if (cc is not null) Volatile.Write(ref Slot(held!, at), cc);
                at = cpu;
                held = sc;
                cc = Interlocked.Exchange(ref Slot(sc, at), null) ?? TakeOtherSlot(sc, ref at);
                if (cc is null)
                {
                    held = null;
                    _owner.Free(pfns[i]); // every cache busy: the tree takes it, as Linux does when the depot is full
                    continue;
                }
            }
            Put(sc, at, cc!, pfns[i]);
        }
        if (cc is not null) Volatile.Write(ref Slot(held!, at), cc);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Magazine PushDepot(SizeCache sc, int cpu, Magazine full)
    {
        full.PushedBy = cpu & _slotMask;
        lock (sc.DepotLock)
        {
            sc.Depot.Add(full);
            if (sc.Spare.TryPop(out var empty)) return empty;
        }
        return new Magazine(_rooms[cpu & _slotMask]); // the depot grows: a new magazine, as Linux allocates one
    }

    // A full magazine from the depot, this CPU's own when one is near the top; the emptied one becomes a spare.
    private Magazine? PopDepot(SizeCache sc, int cpu, Magazine emptied)
    {
        Debug.Assert(emptied.Count == 0, "only an empty magazine is replaced from the depot");
        int me = cpu & _slotMask;
        lock (sc.DepotLock)
        {
            var depot = sc.Depot;
            int n = depot.Count;
            if (n == 0) return null;
            int pick = n - 1;
            for (int k = n - 1; k >= Math.Max(0, n - DepotSearch); k--)
            {
                if (depot[k].PushedBy == me) { pick = k; break; }
            }
            var full = depot[pick];
            depot.RemoveAt(pick);
            Retire(sc, emptied);
            return full;
        }
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
                if (cc.Parked is { } parked)
                {
                    Debug.Assert(cc.Spare is null, "a CPU with a parked magazine has no spare: parking took it");
                    Drain(parked);
                    (cc.Parked, cc.Spare) = (null, parked);
                }
                Volatile.Write(ref slot, cc);
            }
            lock (sc.DepotLock)
            {
                foreach (var m in sc.Depot)
                {
                    Drain(m);
                    Retire(sc, m);
                }
                sc.Depot.Clear();
            }
        }
    }

    // An emptied magazine no CPU holds: a spare for the next depot push while there are few, else dropped with its
    // room given back (more spares would keep the depot's peak alive). Called with the depot lock held.
    private void Retire(SizeCache sc, Magazine emptied)
    {
        if (sc.Spare.Count <= _slotMask + 1) sc.Spare.Push(emptied);
        else emptied.Rooms.Give(emptied.Pfns);
    }

    /// <summary>Chunks of magazine rooms allocated by every CPU's arena (tests).</summary>
    internal int RoomChunks => _rooms.Sum(r => r.Chunks);

    private void Drain(Magazine m)
    {
        for (int i = 0; i < m.Count; i++) _owner.Free(m.Pfns[i]);
        m.Count = 0;
    }

    /// <summary>Full magazines in the depots of every size (for tests at rest).</summary>
    internal int DepotMagazines
    {
        get
        {
            int n = 0;
            foreach (var sc in _sizes)
                lock (sc.DepotLock) n += sc.Depot.Count;
            return n;
        }
    }

    /// <summary>Ranges sitting in caches (racy; for statistics and tests at rest).</summary>
    internal long CachedCount
    {
        get
        {
            long n = 0;
            foreach (var sc in _sizes)
            {
                foreach (var cc in sc.All) n += cc.Loaded.Count + cc.Previous.Count + (cc.Parked?.Count ?? 0);
                lock (sc.DepotLock) foreach (var m in sc.Depot) n += m.Count;
            }
            return n;
        }
    }
}
