using System.Runtime.CompilerServices;
using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>
/// A simulated DMA-capable device and the DMA API a driver calls on it (Linux's dma_map_* / dma_sync_* /
/// dma_alloc_coherent on a struct device): addresses come from the ops kind chosen at creation, cache maintenance
/// is done for non-coherent devices by every kind, and the device's own reads and writes go through
/// <see cref="Engine"/>, which reaches memory only through those addresses.
/// </summary>
/// <remarks>
/// Every call validates its arguments and the handles first and raises a typed error before changing anything.
/// A failed mapping raises (<see cref="DmaMappingException"/>, <see cref="IovaSpaceExhaustedException"/>,
/// <see cref="SwiotlbFullException"/>) rather than returning <see cref="MappingErrorAddress"/>; drivers still call
/// <see cref="MappingError"/> on every address, which the checker requires as dma-debug does.
/// </remarks>
public sealed unsafe class DmaDevice : IDisposable
{
    /// <summary>DMA_MAPPING_ERROR: the address no mapping ever has.</summary>
    public const ulong MappingErrorAddress = ulong.MaxValue;

    private readonly DmaOps _ops;
    private readonly DmaChecker? _checker;
    private readonly PhysicalMemory _memory;
    private int _disposed;
    internal long CacheMaintenanceCount;
    internal long FaultCount, StaleAccessCount;
    internal readonly DmaChecker.DeviceTable? CheckerTable; // the checker's record of this device's mappings

    internal DmaDevice(DmaPlatform platform, DmaDeviceOptions options, int id)
    {
        options.Validate();
        Platform = platform;
        Id = id;
        Name = options.Name;
        MaskBits = options.MaskBits;
        Mask = options.Mask;
        IsCoherent = options.Coherent;
        MaxSegmentSize = options.MaxSegmentSize;
        SegmentBoundaryMask = options.SegmentBoundaryMask;
        OpsKind = options.OpsKind;
        _memory = platform.Memory;
        _checker = platform.Checker;
        if (_checker is not null) CheckerTable = new DmaChecker.DeviceTable();
        int cpus = Environment.ProcessorCount;
        _ops = OpsKind switch
        {
            DmaOpsKind.Iommu => new IommuOps(this, platform.Options, cpus),
            DmaOpsKind.Swiotlb => new DirectOps(this, DirectOps.BounceRule.Always),
            DmaOpsKind.Xen => new DirectOps(this, DirectOps.BounceRule.WhenUnreachable),
            _ => new DirectOps(this, DirectOps.BounceRule.Never),
        };
        Engine = new DmaEngine(this, _ops, _checker);
    }

    /// <summary>The platform the device was created on.</summary>
    public DmaPlatform Platform { get; }
    /// <summary>A number unique on the platform.</summary>
    public int Id { get; }
    /// <summary>The device's name.</summary>
    public string Name { get; }
    /// <summary>Address bits of the DMA mask.</summary>
    public int MaskBits { get; }
    /// <summary>The DMA mask: the highest address the device can drive.</summary>
    public ulong Mask { get; }
    /// <summary>True when the device snoops CPU caches (no cache maintenance needed).</summary>
    public bool IsCoherent { get; }
    /// <summary>Largest merged scatterlist segment.</summary>
    public int MaxSegmentSize { get; }
    /// <summary>Segment boundary mask for merging.</summary>
    public ulong SegmentBoundaryMask { get; }
    /// <summary>The ops kind.</summary>
    public DmaOpsKind OpsKind { get; }
    /// <summary>The device's side: reads and writes through DMA addresses.</summary>
    public DmaEngine Engine { get; }

    /// <summary>Cache flushes and invalidations done for this (non-coherent) device.</summary>
    public long CacheMaintenanceOperations => Interlocked.Read(ref CacheMaintenanceCount);
    /// <summary>DMA faults the device caused.</summary>
    public long Faults => Interlocked.Read(ref FaultCount);
    /// <summary>Device accesses that went through a stale IOTLB entry.</summary>
    public long StaleIotlbAccesses => Interlocked.Read(ref StaleAccessCount);

    internal DmaOps Ops => _ops;

    // ---- streaming mappings ----------------------------------------------------------------------------

    /// <summary>dma_map_page: make <paramref name="size"/> bytes at <paramref name="offset"/> of a held block reachable by the device.</summary>
    public ulong MapPage(PageHandle block, int offset, int size, DmaDirection direction) => Map(DmaMapKind.Page, block, offset, size, direction);

    /// <summary>dma_map_single: as <see cref="MapPage"/>, for a buffer the driver names by its CPU address; undo with <see cref="UnmapSingle"/>.</summary>
    public ulong MapSingle(PageHandle block, int offset, int size, DmaDirection direction) => Map(DmaMapKind.Single, block, offset, size, direction);

    /// <summary>dma_unmap_page.</summary>
    public void UnmapPage(ulong dmaAddress, int size, DmaDirection direction) => Unmap(DmaMapKind.Page, dmaAddress, size, direction);

    /// <summary>dma_unmap_single.</summary>
    public void UnmapSingle(ulong dmaAddress, int size, DmaDirection direction) => Unmap(DmaMapKind.Single, dmaAddress, size, direction);

    /// <summary>dma_mapping_error: true for <see cref="MappingErrorAddress"/>. The checker wants it called on every address a map returned.</summary>
    public bool MappingError(ulong dmaAddress)
    {
        _checker?.OnMappingErrorChecked(this, dmaAddress);
        return dmaAddress == MappingErrorAddress;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Map(DmaMapKind kind, PageHandle block, int offset, int size, DmaDirection direction)
    {
        ThrowIfDisposed();
        CheckDirection(direction);
        // One check of the handle for its view, caching and frame (three lookups were ~12 ns of a ~300 ns bounce).
        byte* view = _memory.HeldView(block, out var caching, out ulong frame);
        int length = block.PageCount << PhysicalMemory.PageShift;
        if (size <= 0 || offset < 0 || offset > length - size)
            ThrowBadRange(offset, size, length);
        frame += (ulong)(offset >> PhysicalMemory.PageShift);
        if (OpsKind == DmaOpsKind.Iommu) caching = CachingMode.WriteBack;
        ulong dma = _ops.Map(block, view + offset, frame, offset, size, direction, caching, out bool bounced);
        _checker?.OnMap(this, kind, dma, block, offset, size, direction, bounced, 1);
        return dma;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadRange(int offset, int size, int length)
        => throw new ArgumentOutOfRangeException(nameof(size), size, $"Device '{Name}': the range [{offset}, {offset}+{size}) is not a non-empty part of the block of {length} bytes.");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Unmap(DmaMapKind kind, ulong dma, int size, DmaDirection direction)
    {
        ThrowIfDisposed();
        CheckDirection(direction);
        if (size <= 0) ThrowBadUnmapSize(size);
        if (_checker is null)
        {
            _ops.Unmap(dma, size, direction);
            return;
        }
        UnmapChecked(kind, dma, size, direction);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadUnmapSize(int size)
        => throw new ArgumentOutOfRangeException(nameof(size), size, $"Device '{Name}': unmap needs the positive size that was mapped.");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void UnmapChecked(DmaMapKind kind, ulong dma, int size, DmaDirection direction)
    {
        var entry = _checker!.OnUnmap(this, kind, dma, size, direction, 1, default); // untracked before the address can be reused
        try
        {
            _ops.Unmap(dma, size, direction);
        }
        catch (DmaMappingException)
        {
            _checker.Restore(this, dma, entry);
            throw;
        }
    }

    /// <summary>dma_sync_single_for_cpu: make what the device wrote visible to the CPU (bounce back, invalidate caches).</summary>
    public void SyncForCpu(ulong dmaAddress, int size, DmaDirection direction) => Sync(dmaAddress, size, direction, true);

    /// <summary>dma_sync_single_for_device: hand what the CPU wrote to the device (bounce to it, clean caches).</summary>
    public void SyncForDevice(ulong dmaAddress, int size, DmaDirection direction) => Sync(dmaAddress, size, direction, false);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Sync(ulong dma, int size, DmaDirection direction, bool forCpu)
    {
        ThrowIfDisposed();
        CheckDirection(direction);
        if (size <= 0) ThrowBadSyncSize(size);
        _checker?.OnSync(this, dma, size, direction, forCpu);
        _ops.Sync(dma, size, direction, forCpu);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadSyncSize(int size)
        => throw new ArgumentOutOfRangeException(nameof(size), size, $"Device '{Name}': sync needs a positive size.");

    // ---- scatterlists ----------------------------------------------------------------------------------

    /// <summary>dma_map_sg: map every entry and merge what lands contiguous. Returns the number of DMA segments.</summary>
    public int MapScatterlist(DmaScatterlist list, DmaDirection direction)
    {
        ThrowIfDisposed();
        CheckDirection(direction);
        ArgumentNullException.ThrowIfNull(list);
        if (list.MappedBy is not null)
            throw new InvalidOperationException($"The scatterlist is already mapped for device '{list.MappedBy.Name}'.");
        if (list.Count == 0)
            throw new ArgumentException($"Device '{Name}': an empty scatterlist cannot be mapped.", nameof(list));
        list.Resolve(_memory);
        var dma = new ulong[list.Count];
        bool bounced = false;
        // Without an IOMMU the entries lie wherever their pages (or bounce slots) are, not in one range from the
        // first, and each may bounce or not: the checker matches device writes and CPU reads entry by entry.
        var segments = _checker is not null && _ops is not IommuOps ? new (ulong Dma, int Length)[list.Count] : null;
        var parts = segments is null ? null : new DmaChecker.Part[list.Count];
        if (_ops is IommuOps iommu)
        {
            list.IovaPages = iommu.MapList(list, direction, dma);
        }
        else
        {
            int e = 0;
            try
            {
                for (; e < list.Count; e++)
                {
                    list.Resolved(e, out var block, out byte* cpu, out ulong frame, out int offset, out int length);
                    dma[e] = _ops.Map(block, cpu, frame, offset, length, direction, list.CachingOf(e), out bool b);
                    bounced |= b;
                    if (segments is not null)
                    {
                        segments[e] = (dma[e], length);
                        parts![e] = new DmaChecker.Part(block, offset, b);
                    }
                }
            }
            catch
            {
                for (int k = 0; k < e; k++) _ops.Unmap(dma[k], list[k].Length, direction); // nothing stays half mapped
                throw;
            }
        }
        list.SetMapped(this, direction, dma);
        if (_checker is not null)
            _checker.OnMap(this, DmaMapKind.Scatterlist, dma[0], list[0].Block, list[0].Offset, (int)Math.Min(list.TotalBytes, int.MaxValue), direction, bounced, list.Count, segments, parts);
        return list.MappedCount;
    }

    /// <summary>dma_unmap_sg: <paramref name="entries"/> must be the count passed to map (list.Count), not the segments returned.</summary>
    public void UnmapScatterlist(DmaScatterlist list, int entries, DmaDirection direction)
    {
        ThrowIfDisposed();
        CheckDirection(direction);
        ArgumentNullException.ThrowIfNull(list);
        if (list.MappedBy != this)
            throw new DmaMappingException(Name, 0, $"Device '{Name}': the scatterlist is not mapped for this device.");
        ulong first = list.EntryDma[0];
        _checker?.OnUnmap(this, DmaMapKind.Scatterlist, first, list.TotalBytes, direction, entries, default);
        if (_ops is IommuOps iommu)
            iommu.UnmapPages(first >> PhysicalMemory.PageShift, list.IovaPages, first, (int)Math.Min(list.TotalBytes, int.MaxValue), direction);
        else
            for (int e = 0; e < list.Count; e++) _ops.Unmap(list.EntryDma[e], list[e].Length, direction);
        list.ClearMapped();
    }

    /// <summary>dma_sync_sg_for_cpu over every entry.</summary>
    public void SyncScatterlistForCpu(DmaScatterlist list, DmaDirection direction) => SyncList(list, direction, true);

    /// <summary>dma_sync_sg_for_device over every entry.</summary>
    public void SyncScatterlistForDevice(DmaScatterlist list, DmaDirection direction) => SyncList(list, direction, false);

    private void SyncList(DmaScatterlist list, DmaDirection direction, bool forCpu)
    {
        ArgumentNullException.ThrowIfNull(list);
        ThrowIfDisposed();
        CheckDirection(direction);
        if (list.MappedBy != this)
            throw new DmaMappingException(Name, 0, $"Device '{Name}': the scatterlist is not mapped for this device.");
        _checker?.OnSync(this, list.EntryDma[0], 1, direction, forCpu);
        for (int e = 0; e < list.Count; e++) _ops.Sync(list.EntryDma[e], list[e].Length, direction, forCpu);
    }

    // ---- coherent memory -------------------------------------------------------------------------------

    /// <summary>
    /// dma_alloc_coherent: a block of 2^order pages both the CPU and the device see without syncs: below the mask
    /// (DMA32 for a mask of 32 bits or less), machine-contiguous under Xen (the P2M exchange), uncached for a
    /// non-coherent device.
    /// </summary>
    public DmaCoherentBlock AllocateCoherent(int order)
    {
        ThrowIfDisposed();
        if ((uint)order > PhysicalMemory.MaxOrder)
            throw new ArgumentOutOfRangeException(nameof(order), order, $"Device '{Name}': order must be 0..{PhysicalMemory.MaxOrder}.");
        var zone = MaskBits <= 32 || _memory.Capacity(Zone.Normal) == 0 ? Zone.Dma32 : Zone.Normal;
        var block = _memory.AllocateBlock(zone, order);
        bool exchanged = false;
        ulong dma;
        try
        {
            if (_memory.IsXen && OpsKind != DmaOpsKind.Iommu)
            {
                if (!_memory.TryMakeContiguous(block, Mask, out _))
                    throw new DmaMappingException(Name, 0, $"Device '{Name}': no machine-contiguous memory of order {order} is free below its {MaskBits}-bit mask.");
                exchanged = true;
            }
            if (!IsCoherent) _memory.SetCaching(block, CachingMode.Uncached);
            fixed (byte* cpu = _memory.GetSpan(block))
                dma = _ops.MapCoherent(block, cpu, _memory.FrameOf(block));
        }
        catch
        {
            if (exchanged) _memory.DestroyContiguous(block);
            _memory.FreeBlock(block);
            throw;
        }
        _checker?.OnMap(this, DmaMapKind.Coherent, dma, block, 0, block.PageCount << PhysicalMemory.PageShift, DmaDirection.Bidirectional, false, 0);
        return new DmaCoherentBlock(block, dma);
    }

    /// <summary>
    /// dma_free_coherent: give back a block from <see cref="AllocateCoherent"/>, with the DMA address it came with.
    /// After the device was disposed the block goes straight back to the system.
    /// </summary>
    public void FreeCoherent(DmaCoherentBlock coherent)
    {
        var (block, dma) = coherent;
        if (Volatile.Read(ref _disposed) != 0)
        {
            // The device is gone and its mappings with it (the checker reported this block at release); the memory
            // is still the caller's to give back, so it goes to the system rather than being lost.
            if (_memory.IsXen && OpsKind != DmaOpsKind.Iommu) _memory.DestroyContiguous(block);
            _memory.FreeBlock(block);
            return;
        }
        var entry = _checker?.OnUnmap(this, DmaMapKind.Coherent, dma, (long)block.PageCount << PhysicalMemory.PageShift, DmaDirection.Bidirectional, 0, block);
        try
        {
            _ops.UnmapCoherent(dma, block);
        }
        catch (DmaMappingException)
        {
            _checker?.Restore(this, dma, entry);
            throw;
        }
        if (_memory.IsXen && OpsKind != DmaOpsKind.Iommu) _memory.DestroyContiguous(block);
        _memory.FreeBlock(block);
    }

    // ---- helpers ---------------------------------------------------------------------------------------

    // Both checks run on every call of the hot paths: the throws live out of line so the checks inline.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckDirection(DmaDirection d)
    {
        if ((uint)d > (uint)DmaDirection.FromDevice) ThrowBadDirection(d);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadDirection(DmaDirection d)
        => throw new ArgumentOutOfRangeException(nameof(d), d, $"Device '{Name}': direction must be Bidirectional, ToDevice or FromDevice.");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowDisposed();
    }

    /// <summary>True once <see cref="Dispose"/> has begun (a map that took swiotlb slots checks it to give them back).</summary>
    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposed() => throw new ObjectDisposedException($"DmaDevice '{Name}'");

    /// <summary>
    /// Release the device: the checker reports mappings still in place; its bounce slots go back now, its IOMMU
    /// domain's memory once the GC finds the device unreachable. A call already running on another thread ends in
    /// success or a typed error; later calls throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _checker?.OnRelease(this);
        _ops.Dispose();
        Platform.Forget(this);
    }

    /// <summary>Name, ops kind and mask, for logs.</summary>
    public override string ToString() => $"{Name} ({OpsKind}, {MaskBits}-bit{(IsCoherent ? "" : ", non-coherent")})";
}
