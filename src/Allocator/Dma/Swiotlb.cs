using System.Numerics;
using System.Runtime.Intrinsics;
using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Dma;

/// <summary>
/// The software IO TLB (kernel/dma/swiotlb.c): a pool of bounce memory every device can reach, cut into 2 KiB
/// slots (IO_TLB_SHIFT 11) grouped in segments of 128 (IO_TLB_SEGSIZE) that no mapping crosses, and split into
/// per-CPU areas each under its own lock. Each slot's list value is the number of free slots from it to the end of
/// its run inside the segment, so a search reads one number per candidate, as Linux's does.
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
    private readonly int[] _list;
    private readonly int[] _owner; // device id per slot, 0 when free: a device reaches only slots it was given
    private readonly int[] _head; // per slot in use: the first slot of its mapping
    private readonly nint[] _orig; // per mapping's first slot: the CPU address of the buffer it bounces (slots[].orig_addr)
    private readonly int[] _mapped; // per mapping's first slot: bytes mapped (slots[].alloc_size); 0 when none starts there
    private readonly CachingMode[] _caching; // per mapping's first slot: how the CPU's mapping of the buffer stores
    private readonly Area[] _areas;
    private readonly int _areaSlots;

    // area->lock is a spinlock in Linux, held for a search or a release only: here too. Uncontended it is one
    // compare-exchange and one store (a Lock costs two atomics and a thread-id read: ~25 ns of a ~60 ns memcpy);
    // a waiter backs off with SpinWait, which yields and sleeps when the holder was preempted (threads > cores).
    private sealed class Area
    {
        private int _held;
        internal int Index; // where the next search starts, relative to the area
        internal int Used;

        internal void Enter()
        {
            if (Interlocked.CompareExchange(ref _held, 1, 0) != 0) EnterContended();
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        private void EnterContended()
        {
            var spin = new SpinWait();
            do spin.SpinOnce(sleep1Threshold: -1);
            while (Volatile.Read(ref _held) != 0 || Interlocked.CompareExchange(ref _held, 1, 0) != 0);
        }

        internal void Exit() => Volatile.Write(ref _held, 0);
    }

    internal int Slots => _list.Length;
    internal long UsedBytes
    {
        get
        {
            long used = 0; // a diagnostic: each area's count is exact, their sum a moment's view (Linux's mem_used)
            foreach (var a in _areas) used += Volatile.Read(ref a.Used);
            return used * SlotSize;
        }
    }
    internal long PoolBytes => (long)_list.Length * SlotSize;

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
        _list = new int[blocks * SlotsPerBlock];
        _owner = new int[_list.Length];
        _head = new int[_list.Length];
        _orig = new nint[_list.Length];
        _mapped = new int[_list.Length];
        _caching = new CachingMode[_list.Length];
        for (int i = 0; i < _list.Length; i++) _list[i] = SegmentSlots - (i & (SegmentSlots - 1));
        int nareas = 1;
        while (nareas * 2 <= cpus && _list.Length / (nareas * 2) >= SegmentSlots) nareas *= 2;
        _areas = new Area[Math.Max(1, nareas)];
        for (int a = 0; a < _areas.Length; a++) _areas[a] = new Area();
        _areaSlots = _list.Length / _areas.Length;
    }

    // Slots are never negative: unsigned division and remainder by the power of two are a shift and a mask.
    internal ulong BusOf(int slot) => _bus[(uint)slot / SlotsPerBlock] + (ulong)((uint)slot % SlotsPerBlock) * SlotSize;
    internal byte* HostOf(int slot) => _host[(uint)slot / SlotsPerBlock] + (nuint)((uint)slot % SlotsPerBlock) * SlotSize;

    /// <summary>The slot a bus address falls in, or -1 when it is not swiotlb memory.</summary>
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
            int rel = (area.Index + stride - 1) / stride * stride;
            for (int tries = 0; tries < _areaSlots / stride; tries++, rel += stride)
            {
                if (rel + nslots > _areaSlots) rel = 0;
                int i = first + rel;
                if (_list[i] < nslots) continue;
                if (mask < uint.MaxValue && BusOf(i) + (ulong)size - 1 > mask) continue; // every slot lies below 4 GiB
                fixed (int* list = _list)
                {
                    int before = list[i]; // the free slots before i count through it: list[s] = before + (i - s)
                    for (int s = i; s < i + nslots; s++) { list[s] = 0; _owner[s] = owner; _head[s] = i; }
                    RecountBefore(list, i, 0, before);
                }
                area.Index = rel + nslots >= _areaSlots ? 0 : rel + nslots;
                area.Used += nslots;
                return i;
            }
        }
        finally
        {
            area.Exit();
        }
        return -1;
    }

    /// <summary>swiotlb_release_slots: give a run back, merging with the free run after it and before it in the segment.</summary>
    internal void Release(int slot, int size)
    {
        int nslots = (size + SlotSize - 1) >> SlotShift;
        var area = _areas[slot / _areaSlots];
        area.Enter();
        try
        {
            int segmentEnd = (slot + SegmentSlots) & ~(SegmentSlots - 1);
            fixed (int* list = _list)
            {
                int count = slot + nslots < segmentEnd ? list[slot + nslots] : 0;
                for (int s = slot + nslots - 1; s >= slot; s--) { list[s] = ++count; _owner[s] = 0; }
                RecountBefore(list, slot, count, 0); // the free slots before it counted up to it: it was in use
            }
            area.Used -= nslots;
        }
        finally
        {
            area.Exit();
        }
    }

    /// <summary>
    /// swiotlb_tbl_map_single's bookkeeping: remember, at the first slot of a run from <see cref="Allocate"/>, the
    /// buffer it bounces and how many bytes, so unmap and sync can find both from the bus address alone.
    /// </summary>
    internal void Record(int slot, byte* cpu, int size, CachingMode caching)
    {
        _orig[slot] = (nint)cpu;
        _caching[slot] = caching;
        Volatile.Write(ref _mapped[slot], size); // last: a mapping is visible only once whole
    }

    /// <summary>
    /// The first slot of the mapping of <paramref name="owner"/> that <paramref name="slot"/> belongs to, with its
    /// size; -1 when the slot is not in a live mapping of that device.
    /// </summary>
    internal int MappingOf(int slot, int owner, out int mapped)
    {
        mapped = 0;
        if (Volatile.Read(ref _owner[slot]) != owner) return -1;
        int head = Volatile.Read(ref _head[slot]);
        mapped = Volatile.Read(ref _mapped[head]);
        return mapped != 0 ? head : -1;
    }

    /// <summary>
    /// Bytes a device that owns <paramref name="slot"/> may touch from <paramref name="bus"/> in one go: to the end
    /// of the slots of the mapping it is in (one copy per mapping, as a device's burst), at least to the slot's end.
    /// </summary>
    internal int RoomAt(int slot, ulong bus)
    {
        int slotRoom = SlotSize - (int)(bus & (SlotSize - 1));
        int head = Volatile.Read(ref _head[slot]), mapped = Volatile.Read(ref _mapped[head]);
        if (mapped == 0) return slotRoom;
        long room = (long)(BusOf(head) + ((ulong)(mapped + SlotSize - 1) & ~(ulong)(SlotSize - 1)) - bus);
        return room > slotRoom ? (int)room : slotRoom;
    }

    /// <summary>The CPU address of the buffer the mapping starting at <paramref name="head"/> bounces.</summary>
    internal byte* OrigOf(int head) => (byte*)_orig[head];

    /// <summary>How the CPU's mapping of that buffer stores.</summary>
    internal CachingMode CachingAt(int head) => _caching[head];

    /// <summary>
    /// Take the mapping starting at <paramref name="head"/> for unmapping: true for exactly one caller when it
    /// still maps <paramref name="size"/> bytes. After it the mapping is gone for sync and a second unmap; the
    /// caller bounces back and then calls <see cref="Release"/>.
    /// </summary>
    internal bool TryClaim(int head, int size) => Interlocked.CompareExchange(ref _mapped[head], 0, size) == size;

    /// <summary>Claim and release every mapping <paramref name="owner"/> still holds (its device is going away).</summary>
    internal void ReleaseAllOf(int owner)
    {
        for (int s = 0; s < _list.Length; s++)
        {
            if (Volatile.Read(ref _owner[s]) != owner || _head[s] != s) continue;
            int mapped = Volatile.Read(ref _mapped[s]);
            if (mapped != 0 && TryClaim(s, mapped)) Release(s, mapped);
        }
    }

    // The free slots just before `at` in its segment now end at `at`: number them count+1, count+2, ... backwards
    // (the second loop of swiotlb_find_slots and swiotlb_release_slots). Linux walks slot by slot; the result is
    // the same when the run's start is found first and the run then written 8 slots at a time. The walk covers
    // half a segment on average: slot by slot ~70 ns, a quarter of a 4 KiB round trip's budget. The run's start:
    // those free slots still read `old` + (at - s); when the segment's first slot reads exactly that, it is in the
    // same free run (its run reaches at least `at`), so the run starts there, the usual case under next-fit;
    // otherwise the last used slot before `at` is looked for 8 slots at a time.
    // Bounds: `at` is a valid slot and nothing before its segment's first slot is read or written.
    private static void RecountBefore(int* list, int at, int count, int old)
    {
        int segmentStart = at & ~(SegmentSlots - 1), from = at;
        if (at == segmentStart) return;
        if (list[segmentStart] == old + (at - segmentStart)) from = segmentStart;
        else
        {
            while (from - Vector256<int>.Count >= segmentStart)
            {
                uint used = Vector256.Equals(Vector256.Load(list + from - Vector256<int>.Count), Vector256<int>.Zero).ExtractMostSignificantBits();
                if (used != 0)
                {
                    from -= BitOperations.LeadingZeroCount(used << (32 - Vector256<int>.Count)); // just after the last used slot
                    break;
                }
                from -= Vector256<int>.Count;
            }
            if (from - Vector256<int>.Count < segmentStart)
                while (from > segmentStart && list[from - 1] != 0) from--;
        }
        // list[s] = count + (at - s) for s in [from, at)
        var step = Vector256.Create(Vector256<int>.Count);
        var values = Vector256.Create(8, 7, 6, 5, 4, 3, 2, 1) + Vector256.Create(count);
        int s = at - Vector256<int>.Count;
        for (; s >= from; s -= Vector256<int>.Count, values += step) values.Store(list + s);
        for (s += Vector256<int>.Count - 1; s >= from; s--) list[s] = count + (at - s);
    }

    /// <summary>The device a slot was given to (0 when free).</summary>
    internal int OwnerOf(int slot) => Volatile.Read(ref _owner[slot]);

    /// <summary>The free-run value of a slot (tests check the list invariant with it).</summary>
    internal int ListOf(int slot) => _list[slot];

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
