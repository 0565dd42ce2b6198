using System.Diagnostics;
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
/// As Linux's, the pool is one physically contiguous range (the kernel sets it aside at boot), taken from the DMA32
/// zone in 2 MiB blocks lying one after another in one arena when the first device needs it: a slot's physical
/// address, its bus address and its place in this process are each the pool's start plus the slot times 2 KiB, and
/// whether an address is bounce memory is one comparison (is_swiotlb_buffer). Under Xen each block is exchanged for
/// machine-contiguous frames below 4 GiB (xen_swiotlb_fixup), so bus addresses are machine addresses, contiguous
/// only within a block: there a table per 2 MiB of bus space maps them back (Linux translates through the M2P).
/// </remarks>
internal sealed unsafe class Swiotlb : IDisposable
{
    internal const int SlotShift = 11, SlotSize = 1 << SlotShift, SegmentSlots = 128;
    private const int BlockOrder = PhysicalMemory.MaxOrder, SlotsPerBlock = (PhysicalMemory.PageSize << BlockOrder) / SlotSize;
    private const int BlockShift = PhysicalMemory.PageShift + BlockOrder, BusBlocks = 1 << (32 - BlockShift);

    private readonly PhysicalMemory _memory;
    private readonly PageHandle[] _blocks;
    private readonly byte* _host; // slot s is at _host + s * SlotSize
    private readonly ulong _phys, _bytes; // the pool's physical start (its bus start too, without Xen) and size
    private readonly bool _xen;
    private readonly ulong[] _busOfBlock = []; // Xen: each block's machine address
    private readonly short[] _blockOfBus = []; // Xen: per 2 MiB of bus space below 4 GiB, block + 1, or 0
    private readonly int _slots;

    // Native tables (pinned arrays: never moved, freed by the GC with the pool): the free bits, two words a segment,
    // bit (s % 128) set while slot s is free; what the pool remembers per slot; a 64-byte line per area; and each
    // segment's area.
    private readonly ulong* _free;
    private readonly SlotInfo* _slot;
    private readonly AreaLine* _areas;
    private readonly ushort* _areaOfSegment;
    private readonly int _areaCount, _areaSlots;
    private readonly Array[] _pinned;

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

    // area->lock is a spinlock in Linux, held for a search or a release only: here too. Uncontended it is one
    // compare-exchange and one store (a Lock costs two atomics and a thread-id read: ~25 ns of a ~60 ns memcpy);
    // a waiter backs off with SpinWait, which yields and sleeps when the holder was preempted (threads > cores).
    // An area is a cache line of its own: two CPUs' areas never share one.
    [StructLayout(LayoutKind.Sequential, Size = 64)]
    private struct AreaLine
    {
        internal int Held;
        internal int Index; // where the next search starts, relative to the area (see NextIndex)
        internal int Used;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Enter(AreaLine* area)
    {
        if (Interlocked.CompareExchange(ref area->Held, 1, 0) != 0) EnterContended(area);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void EnterContended(AreaLine* area)
    {
        var spin = new SpinWait();
        do spin.SpinOnce(sleep1Threshold: -1);
        while (Volatile.Read(ref area->Held) != 0 || Interlocked.CompareExchange(ref area->Held, 1, 0) != 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Exit(AreaLine* area) => Volatile.Write(ref area->Held, 0);

    internal int Slots => _slots;
    internal ReadOnlySpan<PageHandle> Blocks => _blocks; // the pool's 2 MiB blocks, low to high (tests)
    internal int AreaSlots => _areaSlots; // slots per area (tests check areas against Linux's walk)
    internal long UsedBytes
    {
        get
        {
            long used = 0; // a diagnostic: each area's count is exact, their sum a moment's view (Linux's mem_used)
            for (int a = 0; a < _areaCount; a++) used += Volatile.Read(ref _areas[a].Used);
            return used * SlotSize;
        }
    }
    internal long PoolBytes => (long)_slots * SlotSize;

    /// <summary>The lowest bus address of the pool and the one past its highest slot (for errors: where the pool lies).</summary>
    internal (ulong Start, ulong End) BusRange
        => _slots == 0 ? (0, 0)
         : _xen ? (_busOfBlock.Min(), _busOfBlock.Max() + ((ulong)PhysicalMemory.PageSize << BlockOrder))
         : (_phys, _phys + _bytes);

    internal Swiotlb(PhysicalMemory memory, long bytes, int cpus)
    {
        _memory = memory;
        int blocks = (int)(bytes / (PhysicalMemory.PageSize << BlockOrder));
        _xen = memory.IsXen && blocks > 0; // an empty pool has no machine table: its arithmetic finds nothing
        _blocks = [];
        if (blocks > 0)
        {
            if (bytes > memory.Options.ArenaBytes)
                throw new PagePoolException(
                    $"swiotlb: a bounce pool of {bytes >> 20} MiB does not fit in one arena ({memory.Options.ArenaBytes >> 20} MiB): the pool is one " +
                    "physically contiguous range, as Linux's, and a range lies inside one arena. Configure ArenaBytes of at least SwiotlbBytes.");
            if (!memory.TryAllocateRange(Zone.Dma32, blocks, out _blocks))
                throw new PagePoolException(
                    $"swiotlb: the DMA32 zone has no {bytes >> 20} MiB free in one range for the bounce pool (every arena it can map " +
                    "holds allocations). Configure a larger Dma32Bytes or a smaller SwiotlbBytes, or create the first bouncing device " +
                    "before filling the zone.");
            try
            {
                _phys = memory.PhysicalAddress(_blocks[0]);
                fixed (byte* p = memory.GetSpan(_blocks[0])) _host = p;
                _bytes = (ulong)blocks << BlockShift;
                if (_phys + _bytes - 1 > uint.MaxValue) // the DMA32 zone lies below 4 GiB: anything else is a broken layout
                    throw new PagePoolException($"swiotlb: the bounce pool landed at 0x{_phys:x}, above 4 GiB.");
                if (_xen)
                {
                    _busOfBlock = new ulong[blocks];
                    _blockOfBus = new short[BusBlocks];
                    for (int b = 0; b < blocks; b++)
                    {
                        if (!memory.TryMakeContiguous(_blocks[b], uint.MaxValue, out ulong bus))
                            throw new PagePoolException($"swiotlb: no machine-contiguous 2 MiB below 4 GiB for bounce block {b} of {blocks}; configure a smaller SwiotlbBytes.");
                        if (bus + (1UL << BlockShift) - 1 > uint.MaxValue) // the table below covers 4 GiB of bus space
                            throw new PagePoolException($"swiotlb: bounce block {b} was exchanged to machine address 0x{bus:x}, above 4 GiB.");
                        _busOfBlock[b] = bus;
                        _blockOfBus[bus >> BlockShift] = (short)(b + 1);
                    }
                }
            }
            catch
            {
                ReleaseBlocks();
                throw;
            }
        }
        _slots = blocks * SlotsPerBlock;
        // An area is whole segments: a segment's free bits (two words) and every run in it are under one area's
        // lock, and a search of the area never returns a run that ends in the next one. An odd number of blocks
        // split into more than 8 areas would cut segments (1024 / 16 = 64 slots), so it gets fewer areas.
        int nareas = 1;
        while (nareas * 2 <= cpus && _slots / (nareas * 2) >= SegmentSlots && _slots / (nareas * 2) % SegmentSlots == 0) nareas *= 2;
        _areaCount = nareas;
        _areaSlots = _slots / nareas;
        int segments = _slots / SegmentSlots;
        var free = GC.AllocateArray<ulong>(Math.Max(1, _slots / 64), pinned: true);
        Array.Fill(free, _slots == 0 ? 0 : ulong.MaxValue);
        var slotTable = GC.AllocateArray<byte>(_slots * sizeof(SlotInfo) + 64, pinned: true);
        var areaTable = GC.AllocateArray<byte>(nareas * sizeof(AreaLine) + 64, pinned: true);
        var areaOfSegment = GC.AllocateArray<ushort>(Math.Max(1, segments), pinned: true);
        for (int g = 0; g < segments; g++) areaOfSegment[g] = (ushort)(g * SegmentSlots / _areaSlots);
        _pinned = [free, slotTable, areaTable, areaOfSegment];
        _free = (ulong*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(free));
        _slot = (SlotInfo*)LineAligned(slotTable);
        _areas = (AreaLine*)LineAligned(areaTable);
        _areaOfSegment = (ushort*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(areaOfSegment));
    }

    // The first 64-byte line of a pinned array that has 64 bytes to spare.
    private static byte* LineAligned(byte[] pinned)
        => (byte*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned)) + 63) & ~(nint)63);

    // Slots are never negative: the unsigned shift makes the arithmetic a shift and an add.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong BusOf(int slot) => _xen ? MachineBusOf(slot) : _phys + ((ulong)(uint)slot << SlotShift);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong MachineBusOf(int slot) => _busOfBlock[(uint)slot / SlotsPerBlock] + (ulong)((uint)slot % SlotsPerBlock) * SlotSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* HostOf(int slot) => _host + ((nuint)(uint)slot << SlotShift);

    /// <summary>The slot a bus address falls in, or -1 when it is not swiotlb memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int SlotOf(ulong bus)
    {
        if (_xen) return MachineSlotOf(bus);
        ulong offset = bus - _phys; // is_swiotlb_buffer: below the start wraps to a huge offset
        return offset < _bytes ? (int)(offset >> SlotShift) : -1;
    }

    // Under Xen the blocks' machine addresses are contiguous only within each: one table read per 2 MiB of bus
    // space below 4 GiB (where every block was exchanged to) finds the block.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int MachineSlotOf(ulong bus)
    {
        if (bus >> 32 != 0) return -1;
        int b = _blockOfBus[bus >> BlockShift] - 1;
        return b < 0 ? -1 : b * SlotsPerBlock + (int)((bus & ((1UL << BlockShift) - 1)) >> SlotShift);
    }

    /// <summary>
    /// swiotlb_find_slots: a run of slots for <paramref name="size"/> bytes inside one segment, page aligned when
    /// the mapping is a page or more, whose bus addresses fit <paramref name="mask"/>. Starts in the calling CPU's
    /// area and tries the others. -1 when none is free. Inline in the map path; the walk is out of line.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int Allocate(int size, ulong mask, int owner)
    {
        if (Faults.FaultInjector.ShouldFail(Faults.FaultPoint.SwiotlbSlots)) return -1; // as if every slot were taken
        int nslots = (size + SlotSize - 1) >> SlotShift;
        if ((uint)(nslots - 1) >= SegmentSlots) return -1; // no run is longer than a segment (nor empty)
        int stride = size >= PhysicalMemory.PageSize ? PhysicalMemory.PageSize / SlotSize : 1;
        int start = _areaCount == 1 ? 0 : Shim.CurrentCpu() & (_areaCount - 1);
        int slot = TakeAtIndex(start, nslots, stride, size, mask, owner);
        return slot >= 0 ? slot : AllocateSearching(start, nslots, stride, size, mask, owner);
    }

    // The walk's first candidate when it lies in the free word the area's index points into (the usual case: the
    // index sits just past the last allocation, and a light load finds the slots after it free). A run that does not
    // fit in that word from the index on starts later than any that does, so this is the walk's own answer, found
    // without the walk; anything else (no such run, the word full, a run crossing into the next word) takes the walk.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int TakeAtIndex(int a, int nslots, int stride, int size, ulong mask, int owner)
    {
        var area = _areas + a;
        Enter(area);
        if (_areaSlots - area->Used < nslots) // full (or an empty pool): the walk says so
        {
            Exit(area);
            return -1;
        }
        int at = a * _areaSlots + StartOf(area, nslots, stride);
        ulong runs = _free[at >> 6] >> (at & 63); // bit k: slot at + k is free (slots of this word only)
        if (nslots == 2) runs &= runs >> 1; // up to 4 KiB, the usual case: one step
        else
            for (int k = 1; k < nslots && runs != 0;) // bit k: slots at + k .. at + k + nslots - 1 are free
            {
                int shift = Math.Min(k, nslots - k);
                runs &= runs >> shift;
                k += shift;
            }
        if (stride == 2) runs &= 0x5555_5555_5555_5555UL;
        int i = at + BitOperations.TrailingZeroCount(runs);
        if (runs == 0 || (i & 63) + nslots > 64 || (mask < uint.MaxValue && BusOf(i) + (ulong)size - 1 > mask))
        {
            Exit(area);
            return -1;
        }
        Claim(area, a, i, nslots, owner);
        Exit(area);
        return i;
    }

    // Where Linux's walk starts in an area: its index rounded up to the stride, back at the start when no run of
    // `nslots` fits before the area's end. Under the area's lock.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int StartOf(AreaLine* area, int nslots, int stride)
    {
        int rel = (area->Index + stride - 1) & -stride; // stride is 1 or 2
        return rel + nslots > _areaSlots ? 0 : rel;
    }

    // Take the free run [i, i + nslots) of area `a` for `owner` and move the area's index past it. Under its lock.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Claim(AreaLine* area, int a, int i, int nslots, int owner)
    {
        if ((i & 63) + nslots <= 64) _free[i >> 6] &= ~(RunBits(nslots) << (i & 63)); // one word: up to 4 KiB always
        else TakeBits(i, nslots);
        var info = _slot + i;
        for (int s = 0; s < nslots; s++) { info[s].Owner = owner; info[s].Head = i; }
        area->Used += nslots;
        area->Index = NextIndex(i - a * _areaSlots + nslots, area->Used);
    }

    // The low n bits (1 <= n <= 64).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong RunBits(int n) => ulong.MaxValue >> (64 - n);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int AllocateSearching(int start, int nslots, int stride, int size, ulong mask, int owner)
    {
        for (int k = 0; k < _areaCount; k++)
        {
            int a = (start + k) & (_areaCount - 1);
            int slot = SearchArea(a, nslots, stride, size, mask, owner);
            if (slot >= 0) return slot;
        }
        return -1;
    }

    private int SearchArea(int a, int nslots, int stride, int size, ulong mask, int owner)
    {
        var area = _areas + a;
        int first = a * _areaSlots;
        Enter(area);
        try
        {
            if (_areaSlots - area->Used < nslots) return -1;
            // Linux's walk: candidates from the index (rounded up to the stride) to the area's end, then from its
            // start; a run fits when list[i] >= nslots, that is when its slots are free and in one segment.
            int rel = StartOf(area, nslots, stride);
            int i = Find(first + rel, first + _areaSlots, nslots, stride, size, mask);
            if (i < 0 && rel > 0) i = Find(first, first + rel, nslots, stride, size, mask);
            if (i < 0) return -1;
            Claim(area, a, i, nslots, owner);
            return i;
        }
        finally
        {
            Exit(area);
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
        ulong* free = _free;
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

    // Out of line: only a run that crosses a word (a mapping of more than 4 KiB) needs it.
    [MethodImpl(MethodImplOptions.NoInlining)]
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
    // nobody holds is a bug of the caller's bookkeeping, never a silent merge. Out of line: only a run that crosses
    // a word (a mapping of more than 4 KiB) needs it.
    [MethodImpl(MethodImplOptions.NoInlining)]
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
        int nslots = (size + SlotSize - 1) >> SlotShift;
        Enter(area);
        bool freed = FreeRun(area, slot, nslots);
        Exit(area);
        if (!freed) throw AlreadyFree(slot, nslots);
    }

    // Under the area's lock. False, and nothing changed, when a slot of the run was already free: the caller throws
    // once it has left the lock.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FreeRun(AreaLine* area, int slot, int nslots)
    {
        Debug.Assert(nslots >= 1, "a run has at least one slot (RunBits(0) would be every bit)");
        if ((slot & 63) + nslots <= 64) // the run lies in one word (always, for a mapping of up to 4 KiB)
        {
            ulong bits = RunBits(nslots) << (slot & 63);
            ref ulong word = ref _free[slot >> 6];
            if ((word & bits) != 0) return false;
            word |= bits;
        }
        else if (!GiveBits(slot, nslots)) return false;
        var info = _slot + slot;
        for (int s = 0; s < nslots; s++) info[s].Owner = 0;
        area->Used -= nslots;
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static InvalidOperationException AlreadyFree(int slot, int nslots)
        => new($"swiotlb: release of slots {slot}..{slot + nslots - 1}, some of which are already free.");

    // A table per segment, not a division by the area size: a divide is a few ns, and an unmap made two.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private AreaLine* AreaOf(int slot) => _areas + _areaOfSegment[(uint)slot / SegmentSlots];

    /// <summary>
    /// swiotlb_tbl_unmap_single from the bounce side: when <paramref name="head"/> starts a live mapping of
    /// <paramref name="owner"/> of exactly <paramref name="size"/> bytes, claim it (one caller wins), copy the slots
    /// back to the buffer when <paramref name="bounceBack"/>, give the slots back and return <paramref name="size"/>.
    /// Otherwise change nothing and return what that device maps there: 0 when nothing (never mapped, unmapped by
    /// another thread first, or the slots are another device's by now), or the size it really mapped. One pass
    /// under the area's lock: the checks, the claim (a plain store there) and the release; the lock is taken before
    /// the copy, so it does not wait for the copy's stores to drain. A copy into write-combined or uncached memory
    /// is slow and made outside the lock. Inline in the unmap path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int Unmap(int head, int size, int owner, bool bounceBack)
    {
        if (size <= 0) return 0; // no mapping is empty: nothing to claim (and a run of no slots would free a word)
        var area = AreaOf(head);
        var info = _slot + head;
        Enter(area);
        int mapped = info->Owner == owner ? info->Mapped : 0;
        if (mapped != size)
        {
            Exit(area);
            return mapped;
        }
        Volatile.Write(ref info->Mapped, 0); // gone for sync and a second unmap from here
        if (bounceBack)
        {
            if (info->Caching == CachingMode.WriteBack) BounceCopy.Copy(HostOf(head), (byte*)info->Orig, size);
            else StoreBackUnlocked(area, head, size);
        }
        bool freed = FreeRun(area, head, (size + SlotSize - 1) >> SlotShift);
        Exit(area);
        return freed ? size : throw AlreadyFree(head, (size + SlotSize - 1) >> SlotShift);
    }

    // Called and returning with the area's lock held; a throw (none is expected of a copy) leaves it released.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void StoreBackUnlocked(AreaLine* area, int head, int size)
    {
        Exit(area); // the slots stay ours meanwhile: still in use, and Mapped 0 keeps every other caller away
        PhysicalMemory.StoreAs(_slot[head].Caching, (byte*)_slot[head].Orig, HostOf(head), (nuint)size);
        Enter(area);
    }

    /// <summary><see cref="Unmap"/>, true when it unmapped.</summary>
    internal bool TryUnmap(int head, int size, int owner, bool bounceBack) => Unmap(head, size, owner, bounceBack) == size;

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
    /// What a device access at <paramref name="bus"/> (in <paramref name="slot"/>) reaches: the bounce memory there,
    /// and in <paramref name="room"/> how many bytes from it the access may touch (see <see cref="RoomAt"/>); null
    /// when the slot was not given to <paramref name="owner"/> (the access is a fault).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* DeviceView(int slot, ulong bus, int owner, out int room)
    {
        if (Volatile.Read(ref _slot[slot].Owner) != owner)
        {
            room = 0;
            return null;
        }
        room = RoomAt(slot, bus); // a mapping never leaves its 2 MiB block: its host bytes are contiguous
        return HostOf(slot) + (bus & (SlotSize - 1));
    }

    /// <summary>
    /// For a sync of <paramref name="size"/> bytes at <paramref name="bus"/> (in <paramref name="slot"/>): the bounce
    /// memory there, and the buffer's bytes it stands for with how the CPU's mapping of them stores; null when no live
    /// mapping of <paramref name="owner"/> covers the range.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* BounceView(int slot, ulong bus, int size, int owner, out byte* cpu, out CachingMode caching)
    {
        cpu = null;
        caching = default;
        int head = MappingOf(slot, owner, out int mapped);
        if (head < 0) return null;
        // Bytes from the mapping's start: whole slots before this one, and the offset in it.
        long at = ((long)(slot - head) << SlotShift) + (long)(bus & (SlotSize - 1));
        if (at + size > mapped) return null;
        cpu = (byte*)_slot[head].Orig + at;
        caching = _slot[head].Caching;
        return HostOf(head) + at; // one mapping never leaves its 2 MiB block
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
        // From here to the end of the mapping's last slot: its slots after this one, and the rest of this one.
        int room = (((mapped + SlotSize - 1) >> SlotShift) - (slot - head) - 1) * SlotSize + slotRoom;
        return room > slotRoom ? room : slotRoom; // also when the mapping is gone (mapped 0) or another's by now
    }

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
        for (int a = 0; a < _areaCount; a++)
        {
            Enter(_areas + a);
            Exit(_areas + a);
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
