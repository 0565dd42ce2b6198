using System.Runtime.CompilerServices;
using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>
/// dma-iommu: a streaming map takes an IOVA range (size-aligned, top-down from the device's limit, from the per-CPU
/// cache when it can), writes one leaf entry per page with the permission the direction allows, and returns the IOVA
/// plus the buffer's offset in its page. Unmap clears the entries and either invalidates the IOTLB and frees the IOVA
/// at once (strict) or queues both for the next flush (deferred).
/// </summary>
/// <remarks>
/// The device may be disposed and dropped while a call is inside, and the domain's memory goes only when the GC finds
/// it unreachable (see <see cref="IommuDomain"/>): every path keeps this reachable until its last access to the
/// domain through a raw pointer, by a later use of a field or by GC.KeepAlive(this), which the JIT compiles to no
/// instruction.
/// </remarks>
internal sealed unsafe class IommuOps : DmaOps
{
    private readonly IommuDomain _domain;
    private readonly ulong _limitPfn;
    private bool _tryDac32 = true; // dev->iommu->pci_32bit_workaround: try below 4 GiB first, until that once fails

    internal IommuOps(DmaDevice device, DmaPlatformOptions options, int cpus) : base(device)
    {
        _domain = new IommuDomain(options, cpus);
        _limitPfn = Math.Min(device.Mask >> PhysicalMemory.PageShift, IoPageTable.IovaLimitPfn);
    }

    internal IommuDomain Domain => _domain;
    internal override bool NeverBounces => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Permission(DmaDirection dir) => dir switch
    {
        DmaDirection.ToDevice => IoPageTable.Read,
        DmaDirection.FromDevice => IoPageTable.Write,
        _ => IoPageTable.Read | IoPageTable.Write,
    };

    // iommu_dma_alloc_iova: below 4 GiB first for a wide mask (the SAC trick), then the whole space.
    private ulong AllocIova(ulong pages)
    {
        ulong pfn = 0;
        if (_tryDac32 && _limitPfn >= IovaAllocator.Dma32BitPfn)
        {
            pfn = _domain.Iova.AllocFast(pages, IovaAllocator.Dma32BitPfn - 1, flushCaches: false); // its failure is not exhaustion
            if (pfn == 0) _tryDac32 = false;
        }
        if (pfn == 0) pfn = _domain.Iova.AllocFast(pages, _limitPfn);
        return pfn != 0 ? pfn : AllocIovaAfterFlush(pages);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong AllocIovaAfterFlush(ulong pages)
    {
        // IOVAs waiting in the flush queue are unmapped already; give them back before calling the space full.
        if (_domain.Queue is { } q)
        {
            q.FlushAll();
            ulong pfn = _domain.Iova.AllocFast(pages, _limitPfn);
            if (pfn != 0) return pfn;
        }
        long space = Math.Max(0, (long)_limitPfn - (long)_domain.Iova.StartPfn + 1);
        if (Diagnostics.PagePoolEventSource.DmaOn) Diagnostics.PagePoolEventSource.Log.IovaExhausted(Device.Name, (long)pages, _domain.Iova.UsedPages, space);
        throw new IovaSpaceExhaustedException(Device.Name, Device.MaskBits, (long)pages, _domain.Iova.UsedPages, space);
    }

    // Write the leaf entries of one mapping; the first page records the mapping's length.
    private void MapPages(ulong pfn, ulong pages, byte* host, ulong frame, ulong permission, PageHandle block)
    {
        for (ulong k = 0; k < pages; k++)
        {
            var leaf = _domain.Table.Leaf(pfn + k, true, out int i);
            IoPageTable.Host(leaf, i) = (ulong)(host + (k << PhysicalMemory.PageShift));
            IoPageTable.Block(leaf, i) = block.Value;
            IoPageTable.Length(leaf, i) = k == 0 ? pages : 0;
            Volatile.Write(ref IoPageTable.Pte(leaf, i), ((frame + k) << PhysicalMemory.PageShift) | permission);
        }
        GC.KeepAlive(this);
    }

    internal override ulong Map(PageHandle block, byte* cpu, ulong frame, int offset, int size, DmaDirection dir, CachingMode caching, out bool bounced)
    {
        bounced = false;
        int inPage = offset & (PhysicalMemory.PageSize - 1);
        ulong pages = (ulong)(inPage + size + PhysicalMemory.PageSize - 1) >> PhysicalMemory.PageShift;
        ulong pfn = AllocIova(pages);
        MapPages(pfn, pages, cpu - inPage, frame, Permission(dir), block);
        SyncForDeviceCaches(cpu, size, dir);
        return (pfn << PhysicalMemory.PageShift) | (uint)inPage;
    }

    /// <summary>Map the entries of a scatterlist into one IOVA range, each from a page boundary (iommu_dma_map_sg).</summary>
    internal ulong MapList(DmaScatterlist sg, DmaDirection dir, Span<ulong> entryDma)
    {
        ulong total = 0;
        for (int e = 0; e < sg.Count; e++) total += sg.PageSpan(e);
        ulong pfn = AllocIova(total), cursor = pfn;
        var perm = Permission(dir);
        for (int e = 0; e < sg.Count; e++)
        {
            sg.Resolved(e, out var block, out byte* cpu, out ulong frame, out int offset, out int length);
            int inPage = offset & (PhysicalMemory.PageSize - 1);
            ulong span = sg.PageSpan(e);
            MapPages(cursor, span, cpu - inPage, frame, perm, block);
            if (cursor == pfn) IoPageTable.Length(_domain.Table.Leaf(pfn, false, out int i0), i0) = total;
            else IoPageTable.Length(_domain.Table.Leaf(cursor, false, out int ic), ic) = 0;
            SyncForDeviceCaches(cpu, length, dir);
            entryDma[e] = (cursor << PhysicalMemory.PageShift) | (uint)inPage;
            cursor += span;
        }
        GC.KeepAlive(this);
        return total;
    }

    internal override void Unmap(ulong dma, int size, DmaDirection dir)
    {
        ulong pfn = dma >> PhysicalMemory.PageShift;
        ulong pages = ((dma & (PhysicalMemory.PageSize - 1)) + (ulong)size + PhysicalMemory.PageSize - 1) >> PhysicalMemory.PageShift;
        UnmapPages(pfn, pages, dma, size, dir);
    }

    internal void UnmapPages(ulong pfn, ulong pages, ulong dma, int size, DmaDirection dir)
    {
        var leaf = _domain.Table.Leaf(pfn, false, out int i);
        if (leaf is null || Volatile.Read(ref IoPageTable.Pte(leaf, i)) == 0 || IoPageTable.Length(leaf, i) == 0)
            throw new DmaMappingException(Device.Name, dma, $"Device '{Device.Name}': unmap of DMA address 0x{dma:x}, which starts no mapping of this device.");
        ulong mapped = IoPageTable.Length(leaf, i);
        if (mapped != pages)
            throw new DmaMappingException(Device.Name, dma, $"Device '{Device.Name}': unmap of DMA address 0x{dma:x} for {size} bytes ({pages} pages), but {mapped} pages were mapped there. Unmap with the size you mapped.");
        if (!Device.IsCoherent && dir != DmaDirection.ToDevice) Sync(dma, size, dir, forCpu: true);
        Volatile.Write(ref IoPageTable.Pte(leaf, i), 0);
        IoPageTable.Length(leaf, i) = 0;
        for (ulong k = 1; k < pages; k++)
        {
            var l = _domain.Table.Leaf(pfn + k, false, out int j);
            Volatile.Write(ref IoPageTable.Pte(l, j), 0);
        }
        // The reads of _domain below keep this reachable through the leaf writes above and the IOTLB invalidation.
        if (_domain.Queue is { } q)
        {
            q.Add(pfn, pages);
            return;
        }
        _domain.Iotlb.Invalidate(pfn, pages);
        _domain.Iova.FreeFast(pfn, pages);
    }

    internal override void Sync(ulong dma, int size, DmaDirection dir, bool forCpu)
    {
        ulong end = dma + (ulong)Math.Max(size, 1) - 1;
        for (ulong pfn = dma >> PhysicalMemory.PageShift; pfn <= end >> PhysicalMemory.PageShift; pfn++)
        {
            ulong pte = _domain.Table.Walk(pfn, out ulong host, out _);
            if (pte == 0)
                throw new DmaMappingException(Device.Name, dma, $"Device '{Device.Name}': sync of DMA address 0x{dma:x}+{size}, which is not mapped.");
            if (Device.IsCoherent) continue;
            ulong from = Math.Max(dma, pfn << PhysicalMemory.PageShift), to = Math.Min(end + 1, (pfn + 1) << PhysicalMemory.PageShift);
            byte* p = (byte*)host + (from & (PhysicalMemory.PageSize - 1));
            if (forCpu) SyncForCpuCaches(p, (int)(to - from), dir);
            else SyncForDeviceCaches(p, (int)(to - from), dir);
        }
        GC.KeepAlive(this);
    }

    internal override ulong MapCoherent(PageHandle block, byte* cpu, ulong frame)
    {
        ulong pages = (ulong)block.PageCount;
        ulong pfn = AllocIova(pages);
        MapPages(pfn, pages, cpu, frame, IoPageTable.Read | IoPageTable.Write, block);
        return pfn << PhysicalMemory.PageShift;
    }

    internal override void UnmapCoherent(ulong dma, PageHandle block)
    {
        _domain.Table.Walk(dma >> PhysicalMemory.PageShift, out _, out ulong mapped);
        if (mapped != block.Value)
            throw new DmaMappingException(Device.Name, dma, $"Device '{Device.Name}': DMA address 0x{dma:x} does not map {block}; free coherent memory with the block it was allocated with.");
        UnmapPages(dma >> PhysicalMemory.PageShift, (ulong)block.PageCount, dma, block.PageCount << PhysicalMemory.PageShift, DmaDirection.Bidirectional);
    }

    internal override bool Translate(ulong dma, bool write, out byte* host, out int room, out bool stale, out string? fault)
    {
        ulong pfn = dma >> PhysicalMemory.PageShift;
        stale = false;
        host = null;
        room = 0;
        if (_domain.Iotlb.TryLookup(pfn, out ulong pte, out ulong hostPage, out ulong block))
        {
            // Hardware would not look; the simulation does, only to tell a stale hit from a live one.
            ulong now = _domain.Table.Walk(pfn, out _, out _);
            stale = now != pte;
        }
        else
        {
            pte = _domain.Table.Walk(pfn, out hostPage, out block);
            if (pte == 0)
            {
                fault = "no IO page table entry for it in the device's domain";
                return false;
            }
            _domain.Iotlb.Fill(pfn, pte, hostPage, block);
        }
        GC.KeepAlive(this); // the domain's part ends here; host is the page's own memory
        if (write && (pte & IoPageTable.Write) == 0) { fault = "write through a read-only (ToDevice) mapping"; return false; }
        if (!write && (pte & IoPageTable.Read) == 0) { fault = "read through a write-only (FromDevice) mapping"; return false; }
        if (!Device.Platform.Memory.IsLive(block))
        {
            fault = "the page behind the translation was already freed by its owner; the access is dropped";
            return false;
        }
        int inPage = (int)(dma & (PhysicalMemory.PageSize - 1));
        host = (byte*)hostPage + inPage;
        room = PhysicalMemory.PageSize - inPage;
        fault = null;
        return true;
    }

    public override void Dispose()
    {
        _domain.Queue?.FlushAll();
        _domain.Dispose();
    }
}
