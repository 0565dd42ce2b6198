using PagePool.Dma;
using PagePool.Memory;

namespace PagePool.Allocator.Tests.Model;

// The DMA side of a run: streaming mappings of pool buffers on each kind of device, syncs, the devices' own reads
// and writes through DMA addresses, and accesses to addresses a device holds no mapping for.
public sealed partial class ModelRun
{
    private const int MaxMappings = 48;

    private readonly DmaPlatform _platform;
    private readonly DmaDevice[] _devices;
    private readonly DmaModel _dma = new();

    private DmaChecker Checker => _platform.Checker!;

    private DmaModel.Mapping? MappingAt(ModelOp op) => Resolve(op, _dma.Live, m => m.Tag);

    private string? DmaStep(ModelOp op)
    {
        var rng = new Random(op.C);
        switch (op.Kind)
        {
            case ModelOpKind.DmaMap:
            {
                if (_dma.Live.Count >= MaxMappings || LiveAt(op) is not { Bytes: not null } b) return Skip();
                var handles = _handles[b.Id];
                int j = rng.Next(handles.Length), blockBytes = handles[j].PageCount * PhysicalMemory.PageSize;
                int offset = rng.Next(blockBytes), size = 1 + rng.Next(Math.Min(blockBytes - offset, 3 * PhysicalMemory.PageSize));
                var m = new DmaModel.Mapping(op.Tag, _dma.Devices[op.B % ModelDevices.Count], b, j, PagesBefore(handles, j) * PhysicalMemory.PageSize + offset,
                    offset, size, (DmaDirection)rng.Next(3), rng.Next(2) == 0);
                return Map(m);
            }
            case ModelOpKind.DmaMapAgain:
            {
                if (_dma.Live.Count >= MaxMappings || MappingAt(op) is not { } old) return Skip();
                return Map(new DmaModel.Mapping(op.Tag, old.Device, old.Buffer, old.Block, old.BufferOffset, old.BlockOffset, old.Size, old.Direction, old.Single));
            }
            case ModelOpKind.DmaUnmap:
            {
                return MappingAt(op) is { } m ? Unmap(m) : Skip();
            }
            case ModelOpKind.DmaUnmapWrongSize:
            {
                // One page more than mapped: every kind refuses it (the IOMMU compares pages, the others bytes).
                if (MappingAt(op) is not { } m) return Skip();
                var d = _devices[m.Device.Index];
                return Expect(typeof(DmaMappingException), () =>
                {
                    if (m.Single) d.UnmapSingle(m.Dma, m.Size + PhysicalMemory.PageSize, m.Direction);
                    else d.UnmapPage(m.Dma, m.Size + PhysicalMemory.PageSize, m.Direction);
                }, $"unmap of {m} with the wrong size");
            }
            case ModelOpKind.DmaUnmapUnmapped:
            {
                var dev = _dma.Devices[op.B % ModelDevices.Count];
                if (dev.Retired.Count == 0) return Skip();
                ulong dma = dev.Retired[rng.Next(dev.Retired.Count)];
                // An address a live mapping starts at again (an IOVA or a bus address reused) would unmap that one.
                bool startsLive = dev.Kind == DmaOpsKind.Iommu
                    ? dev.Live.Any(r => r.Dma >> PhysicalMemory.PageShift == dma >> PhysicalMemory.PageShift)
                    : dev.Live.Any(r => r.Dma == dma);
                if (startsLive) return Skip();
                return Expect(typeof(DmaMappingException), () => _devices[dev.Index].UnmapPage(dma, 64, DmaDirection.Bidirectional), $"{dev.Kind} unmap of 0x{dma:x}, already unmapped");
            }
            case ModelOpKind.DmaSync:
            {
                if (MappingAt(op) is not { } m) return Skip();
                int at = rng.Next(m.Size), length = 1 + rng.Next(m.Size - at);
                bool forCpu = rng.Next(2) == 0;
                var d = _devices[m.Device.Index];
                if (Expect(null, () =>
                    {
                        if (forCpu) d.SyncForCpu(m.Dma + (ulong)at, length, m.Direction);
                        else d.SyncForDevice(m.Dma + (ulong)at, length, m.Direction);
                    }, $"sync {(forCpu ? "for the CPU" : "for the device")} of [{at}, +{length}) of {m}") is { } f) return f;
                _dma.Sync(m, at, length, forCpu);
                return null;
            }
            case ModelOpKind.DmaSyncPastEnd:
            {
                if (MappingAt(op) is not { } m) return Skip();
                int at = rng.Next(m.Size), length = m.Size - at + 1 + rng.Next(2 * PhysicalMemory.PageSize);
                ulong start = m.Dma + (ulong)at, end = start + (ulong)length; // exclusive
                var dev = m.Device;
                // The IOMMU asks only that every page of the range be mapped; the others that one mapping cover it all.
                // A range another mapping covers whole is a sync of that one (overlapping mappings of a direct device),
                // made here with its direction as a correct driver would.
                var other = dev.Kind == DmaOpsKind.Iommu ? null : dev.Live.Cast<DmaModel.Range?>().FirstOrDefault(r => r!.Value.Dma <= start && end <= r.Value.Dma + (ulong)r.Value.Size);
                bool covered = dev.Kind == DmaOpsKind.Iommu
                    ? Enumerable.Range(0, (int)(((end - 1) >> 12) - (start >> 12) + 1)).All(k => dev.Reaches(((start >> 12) + (ulong)k) << 12))
                    : other is not null;
                var direction = other?.Owner is DmaModel.Mapping o ? o.Direction : other is not null ? DmaDirection.Bidirectional : m.Direction;
                bool forCpu = rng.Next(2) == 0;
                var d = _devices[dev.Index];
                return Expect(covered ? null : typeof(DmaMappingException), () =>
                {
                    if (forCpu) d.SyncForCpu(start, length, direction);
                    else d.SyncForDevice(start, length, direction);
                }, $"sync of [{at}, +{length}) of {m}, past its end");
            }
            case ModelOpKind.DeviceWrite:
            case ModelOpKind.DeviceRead:
            {
                if (MappingAt(op) is not { } m) return Skip();
                bool write = op.Kind == ModelOpKind.DeviceWrite;
                int at = rng.Next(m.Size), length = 1 + rng.Next(m.Size - at);
                var engine = _devices[m.Device.Index].Engine;
                ulong dma = m.Dma + (ulong)at;
                var data = new byte[length];
                if (write) rng.NextBytes(data);
                if (!DmaModel.Permits(m, write))
                {
                    m.Device.Faults++;
                    return ExpectFault(() => { if (write) engine.Write(dma, data); else engine.Read(dma, data); }, m.Device, dma, write, $"a device {(write ? "write" : "read")} through {m}");
                }
                if (Expect(null, () => { if (write) engine.Write(dma, data); else engine.Read(dma, data); }, $"a device {(write ? "write" : "read")} of [{at}, +{length}) through {m}") is { } f) return f;
                _tally.DeviceBytes += length;
                var view = DmaModel.DeviceView(m, at, length);
                if (write)
                {
                    data.CopyTo(view);
                    if (m.Bounce is not null) m.Dirty = true;
                    return null;
                }
                int diff = view.CommonPrefixLength(data);
                return diff == length ? null : $"the device read [{at}, +{length}) through {m}: byte {at + diff} is {data[diff]:x2}, the model {view[diff]:x2}";
            }
            case ModelOpKind.DeviceStray:
                return Stray(_dma.Devices[op.B % ModelDevices.Count], rng);
            case ModelOpKind.CpuRead:
            {
                // A CPU read of a bounced buffer the device wrote, not synced since: it sees the old bytes (the
                // model's CPU bytes are those), and the checker reports each such mapping once.
                // Half of the reads go where a mapping is, the others anywhere.
                var near = rng.Next(2) == 0 ? MappingAt(op) : null;
                if ((near?.Buffer ?? LiveAt(op)) is not { Bytes: not null } b) return Skip();
                var handles = _handles[b.Id];
                int j = near?.Block ?? rng.Next(handles.Length), blockBytes = handles[j].PageCount * PhysicalMemory.PageSize;
                int offset = near is null ? rng.Next(blockBytes) : Math.Max(0, near.BlockOffset - rng.Next(64)), length = 1 + rng.Next(blockBytes - offset);
                int stale = b.Mappings.Count(m => m.Dirty && m.Block == j && offset < m.BlockOffset + m.Size && offset + length > m.BlockOffset);
                int before = Checker.CountOf(DmaCheckClass.MissingSyncForCpu);
                var data = new byte[length];
                _platform.CpuRead(handles[j], offset, data);
                var expected = b.Bytes.AsSpan(PagesBefore(handles, j) * PhysicalMemory.PageSize + offset, length);
                int diff = expected.CommonPrefixLength(data);
                if (diff != length) return $"the CPU read buffer {b.Id} block {j} [{offset}, +{length}): byte {offset + diff} is {data[diff]:x2}, the model {expected[diff]:x2}";
                int reported = Checker.CountOf(DmaCheckClass.MissingSyncForCpu) - before;
                _tally.StaleCpuReads += stale > 0 ? 1 : 0;
                return reported == stale ? null : $"the CPU read of buffer {b.Id} block {j} [{offset}, +{length}) overlaps {stale} bounced mappings the device wrote without a sync; the checker reported {reported}";
            }
            case ModelOpKind.CoherentAlloc:
            {
                if (_dma.CoherentBlocks.Count >= MaxCoherent) return Skip();
                var dev = _dma.Devices[op.B % ModelDevices.Count];
                var d = _devices[dev.Index];
                var c = new DmaModel.Coherent(op.Tag, dev, 1 << (op.A % 3)) { Real = d.AllocateCoherent(op.A % 3) };
                var (block, dma) = c.Real;
                _dma.CoherentBlocks.Add(c);
                dev.Add(dma, c.Bytes.Length, c);
                if (d.MappingError(dma)) return $"{c}: the mapping error address";
                if (dma + (ulong)c.Bytes.Length - 1 > d.Mask) return $"{c} lies above the device's mask";
                if (dev.Kind != DmaOpsKind.Iommu && dma != _memory.PhysicalAddress(block)) return $"{c}: without an IOMMU the address is the physical one, 0x{_memory.PhysicalAddress(block):x}";
                var zone = d.MaskBits <= 32 ? Zone.Dma32 : Zone.Normal;
                if (_memory.ZoneOf(block) != zone) return $"{c} is in {_memory.ZoneOf(block)}, not {zone}";
                var caching = d.IsCoherent ? CachingMode.WriteBack : CachingMode.Uncached;
                if (_memory.CachingOf(block) != caching) return $"{c} is {_memory.CachingOf(block)}, not {caching}";
                return CompareCoherent(c, 0, c.Bytes.Length, "as allocated");
            }
            case ModelOpKind.CoherentFree:
            {
                if (Resolve(op, _dma.CoherentBlocks, x => x.Tag) is not { } c) return Skip();
                return FreeCoherent(c);
            }
            case ModelOpKind.CoherentAccess:
            {
                // The device writes or reads, or the CPU writes: no sync in between, both sides see the same bytes.
                if (Resolve(op, _dma.CoherentBlocks, x => x.Tag) is not { } c) return Skip();
                int at = rng.Next(c.Bytes.Length), length = 1 + rng.Next(c.Bytes.Length - at);
                var data = new byte[length];
                int who = rng.Next(3);
                var engine = _devices[c.Device.Index].Engine;
                if (who == 1)
                {
                    engine.Read(c.Real.DmaAddress + (ulong)at, data);
                    int diff = c.Bytes.AsSpan(at, length).CommonPrefixLength(data);
                    if (diff != length) return $"the device read [{at}, +{length}) of {c}: byte {at + diff} is {data[diff]:x2}, the model {c.Bytes[at + diff]:x2}";
                }
                else
                {
                    rng.NextBytes(data);
                    if (who == 0) engine.Write(c.Real.DmaAddress + (ulong)at, data);
                    else _memory.Write(c.Real.Block, at, data);
                    data.CopyTo(c.Bytes, at);
                }
                _tally.DeviceBytes += who < 2 ? length : 0;
                return CompareCoherent(c, at, length, who == 0 ? "after a device write" : who == 1 ? "after a device read" : "after a CPU write");
            }
            default:
                return $"unknown step {op.Kind}";
        }
    }

    private const int MaxCoherent = 8;

    private string? CompareCoherent(DmaModel.Coherent c, int at, int length, string when)
    {
        var data = new byte[length];
        _platform.CpuRead(c.Real.Block, at, data);
        int diff = c.Bytes.AsSpan(at, length).CommonPrefixLength(data);
        return diff == length ? null : $"the CPU read [{at}, +{length}) of {c} {when}: byte {at + diff} is {data[diff]:x2}, the model {c.Bytes[at + diff]:x2}";
    }

    private string? FreeCoherent(DmaModel.Coherent c)
    {
        _devices[c.Device.Index].FreeCoherent(c.Real);
        _dma.CoherentBlocks.Remove(c);
        c.Device.Retire(c);
        return null;
    }

    private string? Map(DmaModel.Mapping m)
    {
        var d = _devices[m.Device.Index];
        var block = _handles[m.Buffer.Id][m.Block];
        // Direct ops: a page above the mask cannot be reached, and one device maps a bus address once.
        bool refused = m.Device.Kind == DmaOpsKind.Direct && (d.MaskBits < 64 && m.Buffer.Zone == Zone.Normal
            || _dma.Live.Any(x => x.Device == m.Device && x.Buffer == m.Buffer && x.Block == m.Block && x.BlockOffset == m.BlockOffset));
        ulong dma = 0;
        if (Expect(refused ? typeof(DmaMappingException) : null, () => dma = m.Single
                ? d.MapSingle(block, m.BlockOffset, m.Size, m.Direction)
                : d.MapPage(block, m.BlockOffset, m.Size, m.Direction), $"map of {m}") is { } f) return f;
        if (refused) return null;
        if (d.MappingError(dma)) return $"map of {m} returned the mapping error address";
        m.Dma = dma;
        if (dma + (ulong)m.Size - 1 > d.Mask) return $"{m} lies above the device's mask";
        if (m.Device.Kind == DmaOpsKind.Direct && dma != _memory.PhysicalAddress(block) + (ulong)m.BlockOffset)
            return $"{m}: a direct device's address is the physical one, 0x{_memory.PhysicalAddress(block) + (ulong)m.BlockOffset:x}";
        if (m.Device.Kind == DmaOpsKind.Iommu && (dma & (PhysicalMemory.PageSize - 1)) != (ulong)(m.BlockOffset & (PhysicalMemory.PageSize - 1)))
            return $"{m}: an IOVA keeps the offset in the page ({m.BlockOffset & 4095})";
        _dma.Map(m);
        return null;
    }

    private string? Unmap(DmaModel.Mapping m)
    {
        var d = _devices[m.Device.Index];
        if (Expect(null, () =>
            {
                if (m.Single) d.UnmapSingle(m.Dma, m.Size, m.Direction);
                else d.UnmapPage(m.Dma, m.Size, m.Direction);
            }, $"unmap of {m}") is { } f) return f;
        _dma.Unmap(m);
        return null;
    }

    private string? UnmapAll(PoolModel.Buffer b)
    {
        foreach (var m in b.Mappings.ToList())
            if (Unmap(m) is { } f) return f;
        return null;
    }

    // A device goes where it holds nothing: an address it unmapped, another device's, a random one, or just past or
    // before one of its own (in the same page or slot: the granule matters). Where the model says no live mapping of
    // the device reaches, the access faults, is counted and named.
    private string? Stray(DmaModel.Device dev, Random rng)
    {
        var others = _dma.Devices.Where(x => x != dev).SelectMany(x => x.Live).ToList();
        ulong address;
        switch (rng.Next(5))
        {
            case 0 when dev.Retired.Count > 0:
                address = dev.Retired[rng.Next(dev.Retired.Count)] + (ulong)rng.Next(256);
                break;
            case 1 when others.Count > 0:
                var o = others[rng.Next(others.Count)];
                address = o.Dma + (ulong)rng.NextInt64(o.Size);
                break;
            case 2 when dev.Live.Count > 0:
                var r = dev.Live[rng.Next(dev.Live.Count)];
                address = r.Dma + (ulong)r.Size + (ulong)rng.Next(rng.Next(2) == 0 ? 256 : 2 * PhysicalMemory.PageSize);
                break;
            case 3 when dev.Live.Count > 0:
                var s = dev.Live[rng.Next(dev.Live.Count)];
                address = s.Dma - 1 - (ulong)rng.Next((int)Math.Min(s.Dma, 256));
                break;
            default:
                address = (ulong)rng.NextInt64(1L << 32);
                break;
        }
        if (dev.Reaches(address)) return Skip();
        bool write = rng.Next(2) == 0;
        var data = new byte[1 + rng.Next(64)];
        var engine = _devices[dev.Index].Engine;
        dev.Faults++;
        return ExpectFault(() => { if (write) engine.Write(address, data); else engine.Read(address, data); }, dev, address, write, $"a stray device {(write ? "write" : "read")} at 0x{address:x}");
    }

    private string? ExpectFault(Action access, DmaModel.Device dev, ulong address, bool write, string what)
    {
        try
        {
            access();
            return $"{what} went through; the model says {_devices[dev.Index].Name} holds no mapping reaching it";
        }
        catch (DmaFaultException e)
        {
            if (e.Fault.Address != address || e.Fault.Write != write || e.Fault.Device != _devices[dev.Index].Name)
                return $"{what} faulted as {e.Fault}";
            _refused = true;
            _tally.Faults++;
            return null;
        }
    }

    // Per device: the mappings the checker tracks are the model's live ranges, and the faults are the model's; the
    // swiotlb slots in use are those of the live bounced mappings.
    private string? CheckDevices()
    {
        foreach (var dev in _dma.Devices)
        {
            var d = _devices[dev.Index];
            if (Checker.ActiveMappings(d) != dev.Entries)
                return $"the checker tracks {Checker.ActiveMappings(d)} mappings of {d.Name}, the model {dev.Entries}";
            if (d.Faults != dev.Faults) return $"{d.Name} counts {d.Faults} faults, the model {dev.Faults}";
        }
        long slots = _dma.Live.Where(m => m.Bounce is not null).Sum(m => (long)(m.Size + 2047) / 2048);
        if (_platform.SwiotlbUsedBytes != slots * 2048)
            return $"swiotlb has {_platform.SwiotlbUsedBytes} bytes in use, the live bounced mappings {slots * 2048}";
        return CheckReports();
    }

    // Reports a run that maps, syncs and unmaps as a correct driver does must never cause. The illegal steps cause
    // others (NeverMapped, WrongSize, SyncOutOfRange, ...), and CpuRead counts MissingSyncForCpu itself.
    private static readonly DmaCheckClass[] NeverReported =
    [
        DmaCheckClass.MapErrorNotChecked, DmaCheckClass.WrongFunction, DmaCheckClass.WrongDirection, DmaCheckClass.DifferentCpuAddress,
        DmaCheckClass.SyncWrongDirection, DmaCheckClass.StaleIotlbAccess, DmaCheckClass.WrongPool, DmaCheckClass.CachedAliasUse,
        DmaCheckClass.PendingAtRelease,
    ];

    private int _reportsSeen;

    private string? CheckReports()
    {
        if (Checker.ReportCount == _reportsSeen) return null;
        var reports = Checker.Reports;
        for (int i = _reportsSeen; i < reports.Count; i++)
            if (NeverReported.Contains(reports[i].Class))
                return $"the checker reported {reports[i].Class}, which this run never causes: {reports[i]}";
        _reportsSeen = reports.Count;
        return null;
    }
}
