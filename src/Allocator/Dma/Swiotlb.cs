using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Dma;

/// <summary>
/// The software IO TLB (kernel/dma/swiotlb.c): a pool of bounce memory every device can reach, cut into 2 KiB
/// slots (IO_TLB_SHIFT 11) grouped in segments of 128 (IO_TLB_SEGSIZE) that no mapping crosses, and split into
/// per-CPU areas each under its own lock. Linux keeps, per slot, the number of free slots from it to the end of its
/// run (list[]), renumbering up to a segment on every allocation and release; here each segment is 128 free bits,
/// so a search tests a whole segment with a few shifts and a release sets bits (<see cref="ListOf"/> still gives
/// Linux's number, and the tests check it).
/// </summary>
/// <remarks>
/// As Linux's io_tlb_slot, the pool itself remembers each mapping (the buffer it bounces, its size): unmap and
/// sync find it from the bus address by arithmetic, without a table or a lock of the device's.
/// </remarks>
/// <remarks>
/// The memory is taken from the DMA32 zone in 2 MiB blocks when the first device needs it; under Xen each block
/// is exchanged for machine-contiguous frames below 4 GiB (xen_swiotlb_fixup), so the slot's bus address is its
/// machine address there.
/// </remarks>
internal sealed unsafe class Swiotlb : IDisposable
{
    internal const int SlotShift = 11, SlotSize = 1 << SlotShift, SegmentSlots = 128;
    private const int BlockOrder = 9, SlotsPerBlock = (PhysicalMemory.PageSize << BlockOrder) / SlotSize;
    private const int BlockShift = PhysicalMemory.PageShift + BlockOrder, BusBlocks = 1 << (32 - BlockShift);

    private readonly PhysicalMemory _memory;
    private readonly PageHandle[] _blocks;
    private readonly byte*[] _host;
    private readonly ulong[] _bus;
    private readonly short[] _blockOfBus = new short[BusBlocks]; // per 2 MiB of bus space below 4 GiB: block + 1, or 0
    private readonly ulong[] _free; // two words per segment: bit (s % 128) set while slot s is free
    private readonly int _slots;
    private readonly byte[] _slotTable; // pinned (never moves), 64 bytes over: room to start the table on a line
    private readonly SlotInfo* _slot; // slot s is _slot[s], the table starting on a 64-byte line

    // What the pool remembers per slot, as Linux's io_tlb_slot: 32 bytes, two slots to a cache line, so what a map,
    // a device access, a sync and an unmap of a 4 KiB mapping read or write of it is one line, where five arrays
    // were five (no change measured on a quiet core: they were all in L1; it is four lines fewer to lose to a
    // neighbour on the core's other hardware thread).
    [StructLayout(LayoutKind.Sequential, Size = 32)]
    private struct SlotInfo
    {
        internal int Owner; // the device given the slot, 0 when free: a device reaches only slots it was given
        internal int Head; // while in use: the first slot of its mapping
        internal int Mapped; // at a mapping's first slot: bytes mapped (alloc_size); 0 when no mapping starts there
        internal CachingMode Caching; // at a mapping's first slot: how the CPU's mapping of the buffer stores
        internal nint Orig; // at a mapping's first slot: the CPU address of the buffer it bounces (orig_addr)
    }
    private readonly Area[] _areas;
    private readonly int _areaSlots;
    private readonly Area[] _areaOfSegment; // areas are whole segments

    // area->lock is a spinlock in Linux, held for a search or a release only: here too. Uncontended it is one
    // compare-exchange and one store (a Lock costs two atomics and a thread-id read: ~25 ns of a ~60 ns memcpy);
    // a waiter backs off with SpinWait, which yields and sleeps when the holder was preempted (threads > cores).
    private sealed class Area
    {
        private int _held;
        internal int Index; // where the next search starts, relative to the area (see NextIndex)
        internal int Used;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        internal void Enter()
        {
            if (Interlocked.CompareExchange(ref _held, 1, 0) != 0) EnterContended();
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private void EnterContended()
        {
            var spin = new SpinWait();
            do spin.SpinOnce(sleep1Threshold: -1);
            while (Volatile.Read(ref _held) != 0 || Interlocked.CompareExchange(ref _held, 1, 0) != 0);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        internal void Exit() => Volatile.Write(ref _held, 0);
    }

    internal int Slots => _slots;
    internal int AreaSlots => _areaSlots; // slots per area (tests check areas against Linux's walk)
    internal long UsedBytes
    {
        get
        {
            long used = 0; // a diagnostic: each area's count is exact, their sum a moment's view (Linux's mem_used)
            foreach (var a in _areas) used += Volatile.Read(ref a.Used);
            return used * SlotSize;
        }
    }
    internal long PoolBytes => (long)_slots * SlotSize;

    /// <summary>The lowest bus address of the pool and the one past its highest slot (for errors: where the pool lies).</summary>
    internal (ulong Start, ulong End) BusRange
        => _bus.Length == 0 ? (0, 0) : (_bus.Min(), _bus.Max() + ((ulong)PhysicalMemory.PageSize << BlockOrder));

    internal Swiotlb(PhysicalMemory memory, long bytes, int cpus)
    {
        _memory = memory;
        int blocks = (int)(bytes / (PhysicalMemory.PageSize << BlockOrder));
        _blocks = new PageHandle[blocks];
        _host = new byte*[blocks];
        _bus = new ulong[blocks];
        try
        {
            for (int b = 0; b < blocks; b++)
            {
                var h = memory.AllocateBlock(Zone.Dma32, BlockOrder);
                _blocks[b] = h;
                ulong bus = memory.PhysicalAddress(h);
                if (memory.IsXen && !memory.TryMakeContiguous(h, uint.MaxValue, out bus))
                    throw new PagePoolException($"swiotlb: no machine-contiguous 2 MiB below 4 GiB for bounce block {b} of {blocks}; configure a smaller SwiotlbBytes.");
                fixed (byte* p = memory.GetSpan(h)) _host[b] = p;
                if (bus >> 32 != 0) // DMA32 memory, or machine frames exchanged below 4 GiB: the table below relies on it
                    throw new PagePoolException($"swiotlb: bounce block {b} landed at bus 0x{bus:x}, above 4 GiB.");
                _bus[b] = bus;
                _blockOfBus[bus >> BlockShift] = (short)(b + 1);
            }
        }
        catch
        {
            ReleaseBlocks();
            throw;
        }
        _slots = blocks * SlotsPerBlock;
        _free = new ulong[_slots / 64];
        Array.Fill(_free, ulong.MaxValue);
        _slotTable = GC.AllocateArray<byte>(_slots * sizeof(SlotInfo) + 64, pinned: true);
        fixed (byte* t = _slotTable) _slot = (SlotInfo*)(((nint)t + 63) & ~(nint)63);
        // An area is whole segments: a segment's free bits (two words) and every run in it are under one area's
        // lock, and a search of the area never returns a run that ends in the next one. An odd number of blocks
        // split into more than 8 areas would cut segments (1024 / 16 = 64 slots), so it gets fewer areas.
        int nareas = 1;
        while (nareas * 2 <= cpus && _slots / (nareas * 2) >= SegmentSlots && _slots / (nareas * 2) % SegmentSlots == 0) nareas *= 2;
        _areas = new Area[Math.Max(1, nareas)];
        for (int a = 0; a < _areas.Length; a++) _areas[a] = new Area();
        _areaSlots = _slots / _areas.Length;
        _areaOfSegment = new Area[_slots / SegmentSlots];
        for (int g = 0; g < _areaOfSegment.Length; g++) _areaOfSegment[g] = _areas[g * SegmentSlots / _areaSlots];
    }

    // Slots are never negative: unsigned division and remainder by the power of two are a shift and a mask.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong BusOf(int slot) => _bus[(uint)slot / SlotsPerBlock] + (ulong)((uint)slot % SlotsPerBlock) * SlotSize;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* HostOf(int slot) => _host[(uint)slot / SlotsPerBlock] + (nuint)((uint)slot % SlotsPerBlock) * SlotSize;

    /// <summary>The slot a bus address falls in, or -1 when it is not swiotlb memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int SlotOf(ulong bus)
    {
        // is_swiotlb_buffer + the index arithmetic: Linux's pool is one physical range, ours is 2 MiB blocks that
        // all lie below 4 GiB, so one table read per 2 MiB of bus space finds the block.
        if (bus >> 32 != 0) return -1;
        int b = _blockOfBus[bus >> BlockShift] - 1;
        return b < 0 ? -1 : b * SlotsPerBlock + (int)((bus & ((1UL << BlockShift) - 1)) >> SlotShift);
    }

    /// <summary>
    /// swiotlb_find_slots: a run of slots for <paramref name="size"/> bytes inside one segment, page aligned when
    /// the mapping is a page or more, whose bus addresses fit <paramref name="mask"/>. Starts in the calling CPU's
    /// area and tries the others. -1 when none is free.
    /// </summary>
    internal int Allocate(int size, ulong mask, int owner)
    {
        if (Faults.FaultInjector.ShouldFail(Faults.FaultPoint.SwiotlbSlots)) return -1; // as if every slot were taken
        int nslots = (size + SlotSize - 1) >> SlotShift;
        if ((uint)(nslots - 1) >= SegmentSlots) return -1; // no run is longer than a segment (nor empty)
        int stride = size >= PhysicalMemory.PageSize ? PhysicalMemory.PageSize / SlotSize : 1;
        int start = Shim.CurrentCpu() & (_areas.Length - 1);
        for (int k = 0; k < _areas.Length; k++)
        {
            int a = (start + k) & (_areas.Length - 1);
            int slot = SearchArea(a, nslots, stride, size, mask, owner);
            if (slot >= 0) return slot;
        }
        return -1;
    }

    private int SearchArea(int a, int nslots, int stride, int size, ulong mask, int owner)
    {
        var area = _areas[a];
        int first = a * _areaSlots;
        area.Enter();
        try
        {
            if (_areaSlots - area.Used < nslots) return -1;
            // Linux's walk: candidates from the index (rounded up to the stride) to the area's end, then from its
            // start; a run fits when list[i] >= nslots, that is when its slots are free and in one segment.
            int rel = (area.Index + stride - 1) & -stride; // stride is 1 or 2
            if (rel + nslots > _areaSlots) rel = 0;
            int i = Find(first + rel, first + _areaSlots, nslots, stride, size, mask);
            if (i < 0 && rel > 0) i = Find(first, first + rel, nslots, stride, size, mask);
            if (i < 0) return -1;
            TakeBits(i, nslots);
            for (int s = i; s < i + nslots; s++) { _slot[s].Owner = owner; _slot[s].Head = i; }
            area.Used += nslots;
            area.Index = NextIndex(i - first + nslots, area.Used);
            return i;
        }
        finally
        {
            area.Exit();
        }
    }

    // Linux sets area->index just past each allocation (next-fit): under a steady map and unmap every bounce lands
    // on slots the area last used a whole area ago (32 MiB a CPU with the 64 MiB default), cache-cold, and the map's
    // copy into them waits on memory (measured here: a 4 KiB round trip 620 ns against 320 ns on reused slots, on
    // a shared host). So the index goes back to the area's start once it passes HotSlots while the area holds at
    // most half that many slots: a light load bounces through the same 64 KiB, which stays in the core's caches
    // even while a neighbour on its other hardware thread takes much of L2 (a window of 512 KiB was 4 % slower in
    // median and mean, side by side on a busy host), and a freed 4 KiB slot still comes back only after 15 other
    // 4 KiB mappings, so a device using a stale bus address still finds the slot free or another device's for a
    // while. Under a heavier load it moves on through the area as Linux's does; which slots are candidates, and in
    // what order from the index, is unchanged.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int NextIndex(int next, int used)
        => next >= _areaSlots || (next >= HotSlots && used <= HotSlots / 2) ? 0 : next;

    internal const int HotSlots = 32;

    // The first slot in [from, to) that starts a run of `nslots` free slots inside its segment, on the stride,
    // whose bus range fits `mask`; -1 when none does. A segment's 128 free bits are two words: the run starts are
    // the free bits AND-ed with themselves shifted down by 1, 2, 4... (log2 of nslots steps), so a search reads two
    // words a segment instead of a list entry a slot.
    private int Find(int from, int to, int nslots, int stride, int size, ulong mask)
    {
        ulong strideBits = stride == 1 ? ulong.MaxValue : 0x5555_5555_5555_5555UL; // stride is 1 or 2 (a page)
        fixed (ulong* free = _free)
        {
            for (int seg = from / SegmentSlots, last = (to - 1) / SegmentSlots; seg <= last; seg++)
            {
                ulong lo = free[2 * seg], hi = free[2 * seg + 1];
                if ((lo | hi) == 0) continue;
                for (int k = 1; k < nslots;)
                {
                    int shift = Math.Min(k, nslots - k); // 1..64
                    if (shift == 64) { lo &= hi; hi = 0; }
                    else { lo &= (lo >> shift) | (hi << (64 - shift)); hi &= hi >> shift; }
                    k += shift;
                }
                lo &= strideBits;
                hi &= strideBits;
                int segStart = seg * SegmentSlots;
                if (from > segStart) // the first segment: from `from` on
                {
                    int b = from - segStart;
                    if (b >= 64) { lo = 0; hi &= ulong.MaxValue << (b - 64); }
                    else lo &= ulong.MaxValue << b;
                }
                if (to < segStart + SegmentSlots) // the last: before `to`
                {
                    int e = to - segStart;
                    if (e <= 64) { hi = 0; lo &= e == 64 ? ulong.MaxValue : (1UL << e) - 1; }
                    else hi &= (1UL << (e - 64)) - 1;
                }
                while ((lo | hi) != 0)
                {
                    int i = segStart + (lo != 0 ? BitOperations.TrailingZeroCount(lo) : 64 + BitOperations.TrailingZeroCount(hi));
                    if (mask >= uint.MaxValue || BusOf(i) + (ulong)size - 1 <= mask) return i; // every slot lies below 4 GiB
                    if (lo != 0) lo &= lo - 1;
                    else hi &= hi - 1;
                }
            }
        }
        return -1;
    }

    // The bits of slots [slot, slot + n) that lie in slot's word (n >= 1), and how many of the n they are.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong WordBits(int slot, int n, out int taken)
    {
        int b = slot & 63;
        taken = Math.Min(n, 64 - b);
        return (taken == 64 ? ulong.MaxValue : (1UL << taken) - 1) << b;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void TakeBits(int slot, int nslots)
    {
        for (int i = slot, n = nslots; n > 0;)
        {
            ulong bits = WordBits(i, n, out int k);
            _free[i >> 6] &= ~bits;
            i += k;
            n -= k;
        }
    }

    // Give the run's bits back; false (nothing changed) when one of them was already free: a release of slots
    // nobody holds is a bug of the caller's bookkeeping, never a silent merge.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool GiveBits(int slot, int nslots)
    {
        for (int i = slot, n = nslots; n > 0;)
        {
            if ((_free[i >> 6] & WordBits(i, n, out int k)) != 0) return false;
            i += k;
            n -= k;
        }
        for (int i = slot, n = nslots; n > 0;)
        {
            _free[i >> 6] |= WordBits(i, n, out int k);
            i += k;
            n -= k;
        }
        return true;
    }

    /// <summary>swiotlb_release_slots: give a run back (the free bits merge with their neighbours by themselves).</summary>
    internal void Release(int slot, int size)
    {
        var area = AreaOf(slot);
        area.Enter();
        try
        {
            FreeRun(area, slot, (size + SlotSize - 1) >> SlotShift);
        }
        finally
        {
            area.Exit();
        }
    }

    // Under the area's lock.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreeRun(Area area, int slot, int nslots)
    {
        if (!GiveBits(slot, nslots)) throw AlreadyFree(slot, nslots);
        for (int s = slot; s < slot + nslots; s++) _slot[s].Owner = 0;
        area.Used -= nslots;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static InvalidOperationException AlreadyFree(int slot, int nslots)
        => new($"swiotlb: release of slots {slot}..{slot + nslots - 1}, some of which are already free.");

    // A table per segment, not a division by the area size: a divide is a few ns, and an unmap made two.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Area AreaOf(int slot) => _areaOfSegment[(uint)slot / SegmentSlots];

    /// <summary>
    /// swiotlb_tbl_unmap_single from the bounce side: claim the mapping of <paramref name="owner"/> starting at
    /// <paramref name="head"/> (true for exactly one caller, while it still maps <paramref name="size"/> bytes), copy the slots back to the buffer
    /// when <paramref name="bounceBack"/>, and give the slots back. One pass under the area's lock: the claim is a
    /// plain store there, not an atomic of its own, and the lock is taken before the copy, so it does not wait for
    /// the copy's stores to drain. A copy into write-combined or uncached memory is slow and made outside the lock.
    /// </summary>
    internal bool TryUnmap(int head, int size, int owner, bool bounceBack)
    {
        var area = AreaOf(head);
        area.Enter();
        bool locked = true;
        try
        {
            // Another thread unmapped it first, or released its device: the slots may be another device's mapping
            // of the same size by now, which the size alone does not tell from this one.
            if (_slot[head].Mapped != size || _slot[head].Owner != owner) return false;
            Volatile.Write(ref _slot[head].Mapped, 0); // gone for sync and a second unmap from here
            if (bounceBack)
            {
                byte* bounce = HostOf(head), cpu = (byte*)_slot[head].Orig;
                if (_slot[head].Caching == CachingMode.WriteBack) BounceCopy.Copy(bounce, cpu, size);
                else
                {
                    area.Exit();
                    locked = false;
                    PhysicalMemory.StoreAs(_slot[head].Caching, cpu, bounce, (nuint)size); // the slots stay ours: still in use
                    area.Enter();
                    locked = true;
                }
            }
            FreeRun(area, head, (size + SlotSize - 1) >> SlotShift);
            return true;
        }
        finally
        {
            if (locked) area.Exit();
        }
    }

    /// <summary>
    /// swiotlb_tbl_map_single's bookkeeping: remember, at the first slot of a run from <see cref="Allocate"/>, the
    /// buffer it bounces and how many bytes, so unmap and sync can find both from the bus address alone.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Record(int slot, byte* cpu, int size, CachingMode caching)
    {
        _slot[slot].Orig = (nint)cpu;
        _slot[slot].Caching = caching;
        Volatile.Write(ref _slot[slot].Mapped, size); // last: a mapping is visible only once whole
    }

    /// <summary>
    /// The first slot of the mapping of <paramref name="owner"/> that <paramref name="slot"/> belongs to, with its
    /// size; -1 when the slot is not in a live mapping of that device.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int MappingOf(int slot, int owner, out int mapped)
    {
        mapped = 0;
        if (Volatile.Read(ref _slot[slot].Owner) != owner) return -1;
        int head = Volatile.Read(ref _slot[slot].Head);
        mapped = Volatile.Read(ref _slot[head].Mapped);
        return mapped != 0 ? head : -1;
    }

    /// <summary>
    /// Bytes a device that owns <paramref name="slot"/> may touch from <paramref name="bus"/> in one go: to the end
    /// of the slots of the mapping it is in (one copy per mapping, as a device's burst), at least to the slot's end.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int RoomAt(int slot, ulong bus)
    {
        int slotRoom = SlotSize - (int)(bus & (SlotSize - 1));
        int head = Volatile.Read(ref _slot[slot].Head), mapped = Volatile.Read(ref _slot[head].Mapped);
        if (mapped == 0) return slotRoom;
        long room = (long)(BusOf(head) + ((ulong)(mapped + SlotSize - 1) & ~(ulong)(SlotSize - 1)) - bus);
        return room > slotRoom ? (int)room : slotRoom;
    }

    /// <summary>The CPU address of the buffer the mapping starting at <paramref name="head"/> bounces.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* OrigOf(int head) => (byte*)_slot[head].Orig;

    /// <summary>How the CPU's mapping of that buffer stores.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal CachingMode CachingAt(int head) => _slot[head].Caching;

    /// <summary>
    /// Claim and release every mapping <paramref name="owner"/> still holds (its device is going away, and is
    /// already marked disposed: maps racing with this check it after taking their slots).
    /// </summary>
    internal void ReleaseAllOf(int owner)
    {
        // A map of the device on another thread takes its slots under an area lock and then checks whether the
        // device is disposed; if so it gives them back itself (DirectOps.MapBounced). Taking each lock once here,
        // after the mark, orders the two: a map that takes slots after this sees the mark; one that took them
        // before is seen by the walk below, which waits (a few copies' time) until it has either recorded its
        // mapping, released here, or given its slots back. An unmap that has claimed a mapping and copies back
        // outside the lock (mapped 0, slots still held) is waited for the same way: it frees the slots itself.
        foreach (var area in _areas)
        {
            area.Enter();
            area.Exit();
        }
        for (int s = 0; s < _slots; s++)
        {
            if (Volatile.Read(ref _slot[s].Owner) != owner || Volatile.Read(ref _slot[s].Head) != s) continue;
            var spin = new SpinWait();
            int mapped;
            while ((mapped = Volatile.Read(ref _slot[s].Mapped)) == 0 && Volatile.Read(ref _slot[s].Owner) == owner && Volatile.Read(ref _slot[s].Head) == s)
                spin.SpinOnce();
            if (mapped != 0) TryUnmap(s, mapped, owner, bounceBack: false);
        }
    }

    /// <summary>The device a slot was given to (0 when free).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int OwnerOf(int slot) => Volatile.Read(ref _slot[slot].Owner);

    /// <summary>
    /// Linux's list[] value of a slot: 0 when it is in use, else the free slots from it to the next used one or its
    /// segment's end (tests check the allocator against Linux's invariant with it).
    /// </summary>
    internal int ListOf(int slot)
    {
        int end = (slot | (SegmentSlots - 1)) + 1, run = 0;
        for (int s = slot; s < end && (_free[s >> 6] & (1UL << (s & 63))) != 0; s++) run++;
        return run;
    }

    private void ReleaseBlocks()
    {
        foreach (var h in _blocks)
        {
            if (h.IsNull) continue;
            if (_memory.IsXen) _memory.DestroyContiguous(h);
            _memory.FreeBlock(h);
        }
    }

    public void Dispose() => ReleaseBlocks();
}
