using System.Runtime.CompilerServices;
using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>
/// dma-direct, swiotlb and Xen's swiotlb ops in one: the bus address of a page is its machine address (the
/// physical address without Xen); a buffer the device cannot reach at that address either fails (direct) or
/// bounces through swiotlb slots (swiotlb always, Xen when the machine frames are not contiguous or not below the
/// mask). Bouncing follows swiotlb.c exactly: map copies to the slots always; unmap copies back for FromDevice and
/// Bidirectional; sync_for_device copies to the slots for ToDevice and Bidirectional; sync_for_cpu copies back for
/// FromDevice and Bidirectional.
/// </summary>
/// <remarks>
/// Without an IOMMU nothing in hardware stops a device, but the simulation does: each device keeps windows, per bus
/// page, counting its active mappings of each 64-byte line, and its engine may touch only lines it holds. A bounced
/// mapping is held by the swiotlb slots themselves: each slot records the device it was given to.
/// </remarks>
internal sealed unsafe class DirectOps : DmaOps
{
    internal enum BounceRule { Never, Always, WhenUnreachable }

    private const int LineShift = 6, LinesPerPage = PhysicalMemory.PageSize >> LineShift;

    private readonly BounceRule _rule;
    private readonly PhysicalMemory _memory;
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, Stream> _maps = new();
    private readonly Dictionary<ulong, Window> _windows = new();

    private struct Stream
    {
        internal PageHandle Block;
        internal byte* Cpu;
        internal int Size;
        internal bool Coherent;
    }

    // A window goes when its last line does. Bounced mappings need none: the swiotlb slot's owner is the hold.
    private sealed class Window(byte* host, PageHandle block)
    {
        internal readonly byte* Host = host;
        internal readonly PageHandle Block = block;
        internal readonly byte[] Lines = new byte[LinesPerPage];
        internal ulong Mask; // bit l set while Lines[l] > 0: the engine's check is one shift
        internal int Held;
    }

    internal DirectOps(DmaDevice device, BounceRule rule) : base(device)
    {
        _rule = rule;
        _memory = device.Platform.Memory;
        if (rule != BounceRule.Never) _tlb = device.Platform.Swiotlb;
    }

    internal override bool NeverBounces => _rule == BounceRule.Never;

    private readonly Swiotlb? _tlb; // the platform takes its pool before creating a bouncing device

    private Swiotlb Tlb => _tlb!;

    // The bus address of the first byte when the device can reach the range directly, else ulong.MaxValue.
    private ulong DirectBus(ulong frame, int offset, int size)
    {
        int inPage = offset & (PhysicalMemory.PageSize - 1);
        ulong pages = (ulong)(inPage + size + PhysicalMemory.PageSize - 1) >> PhysicalMemory.PageShift;
        ulong first = _memory.MachineFrameOf(frame);
        for (ulong k = 1; k < pages; k++)
            if (_memory.MachineFrameOf(frame + k) != first + k) return ulong.MaxValue;
        ulong bus = (first << PhysicalMemory.PageShift) + (ulong)inPage;
        return bus + (ulong)size - 1 <= Device.Mask ? bus : ulong.MaxValue;
    }

    // The bouncing path is inline and small; the direct one (a table, a lock, windows) is out of line, so its locals
    // cost a bounce nothing (a method that holds both zeroes ~300 bytes of frame on every call).
    internal override ulong Map(PageHandle block, byte* cpu, ulong frame, int offset, int size, DmaDirection dir, CachingMode caching, out bool bounced)
    {
        if (_rule == BounceRule.Always)
        {
            bounced = true;
            return MapBounced(block, cpu, size, dir, caching);
        }
        return MapDirect(block, cpu, frame, offset, size, dir, caching, out bounced);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong MapDirect(PageHandle block, byte* cpu, ulong frame, int offset, int size, DmaDirection dir, CachingMode caching, out bool bounced)
    {
        ulong bus = DirectBus(frame, offset, size);
        if (bus != ulong.MaxValue)
        {
            bounced = false;
            SyncForDeviceCaches(cpu, size, dir);
            lock (_lock)
            {
                if (_maps.ContainsKey(bus))
                    throw new DmaMappingException(Device.Name, bus, $"Device '{Device.Name}': DMA address 0x{bus:x} is already mapped by this device; unmap it before mapping it again.");
                _maps.Add(bus, new Stream { Block = block, Cpu = cpu, Size = size });
                Hold(bus, size, cpu, block);
            }
            return bus;
        }
        if (_rule == BounceRule.Never)
            throw new DmaMappingException(Device.Name, _memory.MachineFrameOf(frame) << PhysicalMemory.PageShift,
                $"Device '{Device.Name}' cannot reach {size} bytes at physical 0x{(_memory.MachineFrameOf(frame) << PhysicalMemory.PageShift) + (ulong)(offset & 4095):x}: " +
                $"above its {Device.MaskBits}-bit DMA mask. Allocate from the DMA32 zone, or use IOMMU or swiotlb ops.");
        bounced = true;
        return MapBounced(block, cpu, size, dir, caching);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong MapBounced(PageHandle block, byte* cpu, int size, DmaDirection dir, CachingMode caching)
    {
        if (size > Swiotlb.SegmentSlots * Swiotlb.SlotSize) throw TooLargeToBounce(size);
        var tlb = Tlb;
        int slot = tlb.Allocate(size, Device.Mask, Device.Id);
        if (slot < 0) throw NoSlots(size);
        if (Device.IsDisposed) GiveBackDisposed(slot, size); // released while mapping: see Swiotlb.ReleaseAllOf
        byte* bounce = tlb.HostOf(slot);
        BounceCopy.Copy(cpu, bounce, size); // always, whatever the direction: the slot must not leak old data
        SyncForDeviceCaches(bounce, size, dir);
        tlb.Record(slot, cpu, size, caching); // the slots' owner is the device's hold: no window, no table entry
        return tlb.BusOf(slot);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private DmaMappingException TooLargeToBounce(int size)
        => new(Device.Name, 0, $"Device '{Device.Name}': {size} bytes cannot bounce through swiotlb, which maps at most {Swiotlb.SegmentSlots * Swiotlb.SlotSize} bytes at once. Map smaller pieces.");

    // No run of slots for the mapping: a mask below the whole pool is not a full pool, so the error says what the
    // mask leaves, not how much is in use.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private DmaMappingException NoSlots(int size)
    {
        var tlb = Tlb;
        var (start, end) = tlb.BusRange;
        if (end == 0 || start + (ulong)size - 1 > Device.Mask)
            return new SwiotlbOutOfReachException(Device.Name, Device.MaskBits, size, start, end);
        if (Diagnostics.PagePoolEventSource.DmaOn) Diagnostics.PagePoolEventSource.Log.SwiotlbFull(Device.Name, size, tlb.UsedBytes, tlb.PoolBytes);
        return new SwiotlbFullException(Device.Name, size, tlb.UsedBytes, tlb.PoolBytes);
    }

    // The device was disposed after this map's check and before its slots were taken: its release may already have
    // passed them, so the map gives them back itself and fails as a map after dispose does.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GiveBackDisposed(int slot, int size)
    {
        Tlb.Release(slot, size);
        Device.ThrowIfDisposed();
    }

    // Take (or give back) the device's hold on the lines of [bus, bus+size): the engine may touch held lines only.
    private void Hold(ulong bus, int size, byte* host, PageHandle block)
    {
        ulong end = bus + (ulong)size; // exclusive
        for (ulong page = bus >> PhysicalMemory.PageShift; page << PhysicalMemory.PageShift < end; page++)
        {
            ulong pageStart = page << PhysicalMemory.PageShift;
            if (!_windows.TryGetValue(page, out var w))
                _windows[page] = w = new Window(host - (long)(bus - pageStart), block);
            int first = (int)((Math.Max(bus, pageStart) - pageStart) >> LineShift);
            int last = (int)((Math.Min(end, pageStart + PhysicalMemory.PageSize) - 1 - pageStart) >> LineShift);
            var lines = w.Lines.AsSpan(first, last - first + 1);
            for (int l = 0; l < lines.Length; l++) lines[l]++;
            w.Mask |= LineBits(first, last);
            w.Held += last - first + 1;
        }
    }

    private static ulong LineBits(int first, int last) => (last == 63 ? ulong.MaxValue : (1UL << (last + 1)) - 1) & ~((1UL << first) - 1);

    private void Release(ulong bus, int size)
    {
        ulong end = bus + (ulong)size;
        for (ulong page = bus >> PhysicalMemory.PageShift; page << PhysicalMemory.PageShift < end; page++)
        {
            ulong pageStart = page << PhysicalMemory.PageShift;
            var w = _windows[page];
            int first = (int)((Math.Max(bus, pageStart) - pageStart) >> LineShift);
            int last = (int)((Math.Min(end, pageStart + PhysicalMemory.PageSize) - 1 - pageStart) >> LineShift);
            var lines = w.Lines.AsSpan(first, last - first + 1);
            ulong emptied = 0;
            for (int l = 0; l < lines.Length; l++)
                if (--lines[l] == 0) emptied |= 1UL << (first + l);
            w.Mask &= ~emptied;
            if ((w.Held -= last - first + 1) == 0) _windows.Remove(page);
        }
    }

    private Stream Take(ulong dma, int size, bool coherent, PageHandle block = default)
    {
        lock (_lock)
        {
            if (!_maps.TryGetValue(dma, out var s) || s.Coherent != coherent)
                throw new DmaMappingException(Device.Name, dma, $"Device '{Device.Name}': unmap of DMA address 0x{dma:x}, which starts no {(coherent ? "coherent" : "streaming")} mapping of this device.");
            if (coherent && s.Block != block)
                throw new DmaMappingException(Device.Name, dma, $"Device '{Device.Name}': DMA address 0x{dma:x} belongs to {s.Block}, not {block}; free coherent memory with the block it was allocated with.");
            if (s.Size != size)
                throw new DmaMappingException(Device.Name, dma, $"Device '{Device.Name}': unmap of DMA address 0x{dma:x} for {size} bytes, but {s.Size} bytes were mapped there. Unmap with the size you mapped.");
            _maps.Remove(dma);
            Release(dma, size);
            return s;
        }
    }

    // The first slot of this device's bounce mapping at `dma`, when `dma` is swiotlb memory; -1 otherwise.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int BouncedSlot(ulong dma) => _rule == BounceRule.Never ? -1 : Tlb.SlotOf(dma);

    internal override void Unmap(ulong dma, int size, DmaDirection dir)
    {
        int slot = BouncedSlot(dma);
        if (slot >= 0) UnmapBounced(dma, slot, size, dir);
        else UnmapDirect(dma, size, dir);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void UnmapDirect(ulong dma, int size, DmaDirection dir)
    {
        var s = Take(dma, size, false);
        SyncForCpuCaches(s.Cpu, size, dir);
    }

    // swiotlb_tbl_unmap_single: bounce back for FromDevice and Bidirectional, then give the slots back. The checks
    // (a mapping of this device starts here, of this size) are the pool's, under its lock, in the same pass.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void UnmapBounced(ulong dma, int slot, int size, DmaDirection dir)
    {
        if (!Device.IsCoherent && dir != DmaDirection.ToDevice) InvalidateBounce(dma, slot, size);
        int mapped = Tlb.Unmap(slot, size, Device.Id, bounceBack: dir != DmaDirection.ToDevice);
        if (mapped != size) throw mapped == 0 ? NoStreamingMapping(dma) : WrongUnmapSize(dma, size, mapped);
    }

    // A device that does not snoop may have left the CPU's copy of the bounce lines stale: invalidate them before
    // the bounce back reads them (arch_sync_dma_for_cpu), only once the range is known to be this mapping's.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void InvalidateBounce(ulong dma, int slot, int size)
    {
        var tlb = Tlb;
        if (tlb.MappingOf(slot, Device.Id, out int mapped) == slot && mapped == size)
            SyncForCpuCaches(tlb.HostOf(slot), size, DmaDirection.FromDevice);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private DmaMappingException NoStreamingMapping(ulong dma)
        => new(Device.Name, dma, $"Device '{Device.Name}': unmap of DMA address 0x{dma:x}, which starts no streaming mapping of this device.");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private DmaMappingException WrongUnmapSize(ulong dma, int size, int mapped)
        => new(Device.Name, dma, $"Device '{Device.Name}': unmap of DMA address 0x{dma:x} for {size} bytes, but {mapped} bytes were mapped there. Unmap with the size you mapped.");

    internal override void Sync(ulong dma, int size, DmaDirection dir, bool forCpu)
    {
        int slot = BouncedSlot(dma);
        if (slot >= 0) SyncBounced(dma, slot, size, dir, forCpu);
        else SyncDirect(dma, size, dir, forCpu);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SyncDirect(ulong dma, int size, DmaDirection dir, bool forCpu)
    {
        Stream s = default;
        ulong start = 0;
        bool found = false;
        lock (_lock)
        {
            // Mappings of one device may overlap (the same buffer mapped twice at different offsets): the sync is
            // legal when any one of them covers the whole range, not only the first that holds its start.
            if (_maps.TryGetValue(dma, out s) && (ulong)size <= (ulong)s.Size) { found = true; start = dma; }
            else
                foreach (var (a, x) in _maps)
                    if (dma >= a && dma + (ulong)size <= a + (ulong)x.Size) { s = x; start = a; found = true; break; }
        }
        if (!found) throw NoMappingCovers(dma, size);
        byte* cpu = s.Cpu + (dma - start);
        if (forCpu) SyncForCpuCaches(cpu, size, dir);
        else SyncForDeviceCaches(cpu, size, dir);
    }

    // swiotlb_sync_single_for_cpu / _for_device: the mapping is found from the slot the address falls in.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SyncBounced(ulong dma, int slot, int size, DmaDirection dir, bool forCpu)
    {
        byte* bounce = Tlb.BounceView(slot, dma, size, Device.Id, out byte* cpu, out var caching);
        if (bounce == null) throw NoMappingCovers(dma, size);
        if (forCpu)
        {
            SyncForCpuCaches(bounce, size, dir);
            if (dir != DmaDirection.ToDevice) BounceBack(caching, cpu, bounce, size);
        }
        else
        {
            if (dir != DmaDirection.FromDevice) BounceCopy.Copy(cpu, bounce, size);
            SyncForDeviceCaches(bounce, size, dir);
        }
    }

    // swiotlb_bounce DMA_FROM_DEVICE: the copy into the driver's buffer, stored as its CPU mapping stores.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void BounceBack(CachingMode caching, byte* cpu, byte* bounce, int size)
    {
        if (caching == CachingMode.WriteBack) BounceCopy.Copy(bounce, cpu, size); // the usual case, inline
        else PhysicalMemory.StoreAs(caching, cpu, bounce, (nuint)size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private DmaMappingException NoMappingCovers(ulong dma, int size)
        => new(Device.Name, dma, $"Device '{Device.Name}': sync of DMA address 0x{dma:x}+{size}, which no mapping of this device covers.");

    internal override ulong MapCoherent(PageHandle block, byte* cpu, ulong frame)
    {
        int size = block.PageCount << PhysicalMemory.PageShift;
        ulong bus = _memory.MachineFrameOf(frame) << PhysicalMemory.PageShift;
        if (!_memory.IsMachineContiguous(frame, block.Order) || bus + (ulong)size - 1 > Device.Mask)
            throw new DmaMappingException(Device.Name, bus, $"Device '{Device.Name}': coherent block at bus 0x{bus:x} is not contiguous below its {Device.MaskBits}-bit mask.");
        lock (_lock)
        {
            if (_maps.ContainsKey(bus))
                throw new DmaMappingException(Device.Name, bus, $"Device '{Device.Name}': DMA address 0x{bus:x} is already mapped by this device.");
            _maps.Add(bus, new Stream { Block = block, Cpu = cpu, Size = size, Coherent = true });
            Hold(bus, size, cpu, block);
        }
        return bus;
    }

    internal override void UnmapCoherent(ulong dma, PageHandle block) => Take(dma, block.PageCount << PhysicalMemory.PageShift, true, block);

    internal override bool Translate(ulong dma, bool write, out byte* host, out int room, out bool stale, out string? fault)
    {
        stale = false;
        if (_rule != BounceRule.Never)
        {
            var tlb = Tlb;
            int slot = tlb.SlotOf(dma);
            if (slot >= 0)
            {
                host = tlb.DeviceView(slot, dma, Device.Id, out room);
                fault = host == null ? "the swiotlb slot is not mapped for this device" : null;
                return host != null;
            }
        }
        return TranslateWindow(dma, out host, out room, out fault);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TranslateWindow(ulong dma, out byte* host, out int room, out string? fault)
    {
        ulong page = dma >> PhysicalMemory.PageShift;
        int line = (int)(dma >> LineShift) & (LinesPerPage - 1);
        Window? w;
        byte* pageHost;
        PageHandle block;
        lock (_lock)
        {
            ulong held = _windows.TryGetValue(page, out w) ? w.Mask >> line : 0;
            if ((held & 1) == 0)
            {
                host = null; room = 0;
                fault = "the device has no mapping covering it";
                return false;
            }
            int end = line + System.Numerics.BitOperations.TrailingZeroCount(~held); // the run of held lines from here
            room = (Math.Min(end, LinesPerPage) << LineShift) - (int)(dma & (PhysicalMemory.PageSize - 1));
            pageHost = w!.Host;
            block = w.Block;
        }
        if (!block.IsNull && !IsLive(block))
        {
            host = null; room = 0;
            fault = "the page behind the mapping was already freed by its owner; the access is dropped";
            return false;
        }
        host = pageHost + (dma & (PhysicalMemory.PageSize - 1));
        fault = null;
        return true;
    }

    /// <summary>Release the swiotlb slots of mappings left behind when the device goes (the checker reports them).</summary>
    public override void Dispose()
    {
        if (_rule != BounceRule.Never) Tlb.ReleaseAllOf(Device.Id);
        lock (_lock)
        {
            _maps.Clear();
            _windows.Clear();
        }
    }
}
