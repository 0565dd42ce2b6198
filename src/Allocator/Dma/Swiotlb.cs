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
/// The memory is taken from the DMA32 zone in 2 MiB blocks when the first device needs it; under Xen each block
/// is exchanged for machine-contiguous frames below 4 GiB (xen_swiotlb_fixup), so the slot's bus address is its
/// machine address there.
/// </remarks>
internal sealed unsafe class Swiotlb : IDisposable
{
    internal const int SlotShift = 11, SlotSize = 1 << SlotShift, SegmentSlots = 128;
    private const int BlockOrder = 9, SlotsPerBlock = (PhysicalMemory.PageSize << BlockOrder) / SlotSize;

    private readonly PhysicalMemory _memory;
    private readonly PageHandle[] _blocks;
    private readonly byte*[] _host;
    private readonly ulong[] _bus;
    private readonly Dictionary<ulong, int> _blockOfBus = new();
    private readonly int[] _list;
    private readonly int[] _owner; // device id per slot, 0 when free: a device reaches only slots it was given
    private readonly Area[] _areas;
    private readonly int _areaSlots;
    private long _usedSlots;

    private sealed class Area
    {
        internal readonly Lock Lock = new();
        internal int Index; // where the next search starts, relative to the area
        internal int Used;
    }

    internal int Slots => _list.Length;
    internal long UsedBytes => Volatile.Read(ref _usedSlots) * SlotSize;
    internal long PoolBytes => (long)_list.Length * SlotSize;

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
                _bus[b] = bus;
                _blockOfBus[bus] = b;
            }
        }
        catch
        {
            ReleaseBlocks();
            throw;
        }
        _list = new int[blocks * SlotsPerBlock];
        _owner = new int[_list.Length];
        for (int i = 0; i < _list.Length; i++) _list[i] = SegmentSlots - (i & (SegmentSlots - 1));
        int nareas = 1;
        while (nareas * 2 <= cpus && _list.Length / (nareas * 2) >= SegmentSlots) nareas *= 2;
        _areas = new Area[Math.Max(1, nareas)];
        for (int a = 0; a < _areas.Length; a++) _areas[a] = new Area();
        _areaSlots = _list.Length / _areas.Length;
    }

    internal ulong BusOf(int slot) => _bus[slot / SlotsPerBlock] + (ulong)(slot % SlotsPerBlock) * SlotSize;
    internal byte* HostOf(int slot) => _host[slot / SlotsPerBlock] + (nuint)(slot % SlotsPerBlock) * SlotSize;

    /// <summary>The slot a bus address falls in, or -1 when it is not swiotlb memory.</summary>
    internal int SlotOf(ulong bus)
    {
        ulong blockBase = bus & ~((ulong)(PhysicalMemory.PageSize << BlockOrder) - 1);
        if (!_blockOfBus.TryGetValue(blockBase, out int b)) return -1;
        return b * SlotsPerBlock + (int)((bus - blockBase) >> SlotShift);
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
        lock (area.Lock)
        {
            if (_areaSlots - area.Used < nslots) return -1;
            int rel = (area.Index + stride - 1) / stride * stride;
            for (int tries = 0; tries < _areaSlots / stride; tries++, rel += stride)
            {
                if (rel + nslots > _areaSlots) rel = 0;
                int i = first + rel;
                if (_list[i] < nslots) continue;
                if (BusOf(i) + (ulong)size - 1 > mask) continue;
                fixed (int* list = _list)
                {
                    for (int s = i; s < i + nslots; s++) { list[s] = 0; _owner[s] = owner; }
                    RecountBefore(list, i, 0);
                }
                area.Index = rel + nslots >= _areaSlots ? 0 : rel + nslots;
                area.Used += nslots;
                Interlocked.Add(ref _usedSlots, nslots);
                return i;
            }
        }
        return -1;
    }

    /// <summary>swiotlb_release_slots: give a run back, merging with the free run after it and before it in the segment.</summary>
    internal void Release(int slot, int size)
    {
        int nslots = (size + SlotSize - 1) >> SlotShift;
        var area = _areas[slot / _areaSlots];
        lock (area.Lock)
        {
            int segmentEnd = (slot + SegmentSlots) & ~(SegmentSlots - 1);
            fixed (int* list = _list)
            {
                int count = slot + nslots < segmentEnd ? list[slot + nslots] : 0;
                for (int s = slot + nslots - 1; s >= slot; s--) { list[s] = ++count; _owner[s] = 0; }
                RecountBefore(list, slot, count);
            }
            area.Used -= nslots;
        }
        Interlocked.Add(ref _usedSlots, -nslots);
    }

    // The free slots just before `at` in its segment now end at `at`: number them count+1, count+2, ... backwards
    // (the second loop of swiotlb_find_slots and swiotlb_release_slots). Bounds: `at` is a valid slot, and the walk
    // stops at the segment's first slot, so no index leaves the array.
    private static void RecountBefore(int* list, int at, int count)
    {
        for (int s = at - 1; s >= 0 && (s & (SegmentSlots - 1)) != SegmentSlots - 1 && list[s] != 0; s--) list[s] = ++count;
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
