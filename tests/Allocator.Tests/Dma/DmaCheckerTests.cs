using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

public sealed class DmaCheckerTests : IDisposable
{
    private readonly DmaTestMachine _m = new();
    private readonly DmaDevice _dev;
    private readonly PageHandle _block;

    public DmaCheckerTests()
    {
        _dev = _m.Device("gpu", DmaOpsKind.Direct);
        _block = _m.Memory.AllocateBlock(Zone.Dma32, 1);
    }

    public void Dispose() => _m.Dispose();

    private ulong Map(DmaDirection dir = DmaDirection.Bidirectional, int offset = 0, int size = 4096)
    {
        ulong d = _dev.MapPage(_block, offset, size, dir);
        _dev.MappingError(d);
        return d;
    }

    private DmaCheckReport Only(DmaCheckClass c)
    {
        var r = Assert.Single(_m.Checker.Reports);
        Assert.Equal(c, r.Class);
        Assert.Equal("gpu", r.Device);
        return r;
    }

    [Fact]
    public void Correct_usage_of_every_call_is_reported_clean()
    {
        ulong d = Map();
        _dev.SyncForCpu(d, 4096, DmaDirection.Bidirectional);
        _dev.SyncForDevice(d, 100, DmaDirection.Bidirectional);
        _dev.UnmapPage(d, 4096, DmaDirection.Bidirectional);
        ulong s = _dev.MapSingle(_block, 0, 64, DmaDirection.ToDevice);
        _dev.MappingError(s);
        _dev.UnmapSingle(s, 64, DmaDirection.ToDevice);
        var sg = new DmaScatterlist().Add(_block, 0, 4096).Add(_block, 4096, 4096);
        _dev.MapScatterlist(sg, DmaDirection.FromDevice);
        _dev.SyncScatterlistForCpu(sg, DmaDirection.FromDevice);
        _dev.UnmapScatterlist(sg, 2, DmaDirection.FromDevice);
        var c = _dev.AllocateCoherent(0);
        _dev.FreeCoherent(c);
        _dev.Dispose();
        Assert.Empty(_m.Checker.Reports);
    }

    [Fact]
    public void Unmap_of_memory_never_mapped_is_reported_and_refused()
    {
        Assert.Throws<DmaMappingException>(() => _dev.UnmapPage(0x1234000, 4096, DmaDirection.ToDevice));
        var r = Only(DmaCheckClass.NeverMapped);
        Assert.Equal(0x1234000UL, r.Address);
        Assert.Equal(4096, r.Size);
    }

    [Fact]
    public void Unmap_with_the_wrong_size_is_reported()
    {
        ulong d = Map();
        Assert.Throws<DmaMappingException>(() => _dev.UnmapPage(d, 2048, DmaDirection.Bidirectional));
        var r = Only(DmaCheckClass.WrongSize);
        Assert.Equal(d, r.Address);
        _dev.UnmapPage(d, 4096, DmaDirection.Bidirectional);
        Assert.Single(_m.Checker.Reports);
    }

    [Fact]
    public void Unmap_with_the_wrong_direction_is_reported()
    {
        ulong d = Map(DmaDirection.ToDevice);
        _dev.UnmapPage(d, 4096, DmaDirection.FromDevice);
        Assert.Equal(DmaDirection.FromDevice, Only(DmaCheckClass.WrongDirection).Direction);
    }

    [Fact]
    public void Unmap_by_the_wrong_function_is_reported()
    {
        ulong d = Map();
        _dev.UnmapSingle(d, 4096, DmaDirection.Bidirectional);
        Assert.Contains("UnmapSingle", Only(DmaCheckClass.WrongFunction).Message);
    }

    [Fact]
    public void Free_of_coherent_memory_with_another_cpu_address_is_reported_and_refused()
    {
        var c = _dev.AllocateCoherent(0);
        var other = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        Assert.Throws<DmaMappingException>(() => _dev.FreeCoherent(new DmaCoherentBlock(other, c.DmaAddress)));
        Only(DmaCheckClass.DifferentCpuAddress);
        _dev.FreeCoherent(c);
    }

    [Fact]
    public void Scatterlist_unmapped_with_another_entry_count_is_reported()
    {
        var sg = new DmaScatterlist().Add(_block, 0, 4096).Add(_block, 4096, 4096);
        int segments = _dev.MapScatterlist(sg, DmaDirection.ToDevice);
        Assert.Equal(1, segments);
        _dev.UnmapScatterlist(sg, segments, DmaDirection.ToDevice); // the classic bug: passing the returned count
        Assert.Contains("2 entries", Only(DmaCheckClass.ScatterlistCountMismatch).Message);
    }

    [Fact]
    public void Map_error_not_checked_is_reported_at_unmap()
    {
        ulong d = _dev.MapPage(_block, 0, 64, DmaDirection.ToDevice);
        _dev.UnmapPage(d, 64, DmaDirection.ToDevice);
        Only(DmaCheckClass.MapErrorNotChecked);
    }

    [Fact]
    public void Sync_of_unmapped_memory_is_reported_and_refused()
    {
        Assert.Throws<DmaMappingException>(() => _dev.SyncForCpu(0x7000, 64, DmaDirection.FromDevice));
        Only(DmaCheckClass.SyncUnmapped);
    }

    [Fact]
    public void Sync_past_the_end_of_the_mapping_is_reported()
    {
        ulong d = Map(size: 256);
        Assert.Throws<DmaMappingException>(() => _dev.SyncForCpu(d + 128, 256, DmaDirection.Bidirectional));
        Only(DmaCheckClass.SyncOutOfRange);
    }

    [Fact]
    public void Sync_with_the_wrong_direction_is_reported()
    {
        ulong d = Map(DmaDirection.ToDevice);
        _dev.SyncForCpu(d, 64, DmaDirection.FromDevice);
        Only(DmaCheckClass.SyncWrongDirection);
    }

    [Fact]
    public void Two_writable_mappings_of_one_cache_line_are_reported()
    {
        Map(DmaDirection.FromDevice, 0, 100);
        var other = _m.Device("nic", DmaOpsKind.Direct);
        ulong d = other.MapPage(_block, 100, 28, DmaDirection.FromDevice); // same 64-byte line, another device
        Assert.Equal(DmaCheckClass.OverlappingCacheline, Assert.Single(_m.Checker.Reports).Class);
        other.MappingError(d);
    }

    [Fact]
    public void Read_only_mappings_may_share_cache_lines()
    {
        Map(DmaDirection.ToDevice, 0, 100);
        var other = _m.Device("nic", DmaOpsKind.Direct);
        other.MapPage(_block, 100, 28, DmaDirection.ToDevice);
        Assert.Empty(_m.Checker.Reports);
    }

    [Fact]
    public void Mappings_pending_when_the_device_is_released_are_reported()
    {
        ulong a = Map(size: 64);
        ulong b = Map(offset: 4096, size: 64);
        _dev.Dispose();
        var r = _m.Checker.Reports;
        Assert.Equal(2, r.Count);
        Assert.All(r, x => Assert.Equal(DmaCheckClass.PendingAtRelease, x.Class));
        Assert.Contains(r, x => x.Address == a);
        Assert.Contains(r, x => x.Address == b);
    }

    [Fact]
    public void Cpu_read_of_a_bounced_buffer_the_device_wrote_without_sync_is_reported()
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        ulong d = sw.MapPage(_block, 0, 64, DmaDirection.FromDevice);
        sw.MappingError(d);
        sw.Engine.Write(d, new byte[64]);
        _m.Platform.CpuRead(_block, 0, new byte[8]);
        var r = Assert.Single(_m.Checker.Reports);
        Assert.Equal(DmaCheckClass.MissingSyncForCpu, r.Class);
        Assert.Equal("sw", r.Device);
        _m.Checker.ClearReports();
        sw.SyncForCpu(d, 64, DmaDirection.FromDevice);
        _m.Platform.CpuRead(_block, 0, new byte[8]);
        Assert.Empty(_m.Checker.Reports);
        sw.UnmapPage(d, 64, DmaDirection.FromDevice);
    }

    // A bounced scatterlist's entries sit in slots wherever they were free, not in one range from the first: with
    // slots reused soon after unmap, another mapping of the same device can lie between two entries. Its device
    // writes must not make the list look written without sync (this was a false report in `stress dma --ops-kind
    // swiotlb` on 4 threads); a write into an entry still must.
    [Fact]
    public void A_device_write_between_the_bounce_slots_of_a_synced_scatterlist_is_not_a_missing_sync_and_one_into_an_entry_is()
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        var checker = _m.Checker;
        const ulong first = 0x10000, second = 0x13000, between = 0x11000;
        checker.OnMap(sw, DmaMapKind.Scatterlist, first, _block, 0, 8192, DmaDirection.FromDevice, bounced: true, nents: 2,
            segments: [(first, 4096), (second, 4096)], parts: [new(_block, 0, true), new(_block, 4096, true)]);
        checker.OnDeviceWrite(sw, second, 64);
        checker.OnSync(sw, first, 1, DmaDirection.FromDevice, forCpu: true);
        checker.OnDeviceWrite(sw, between, 64); // another mapping's slot inside [first, first + 8 KiB)
        _m.Platform.CpuRead(_block, 0, new byte[8]);
        Assert.Empty(checker.Reports);

        checker.OnDeviceWrite(sw, second + 100, 64); // into the second entry, after the sync
        _m.Platform.CpuRead(_block, 4096, new byte[8]); // the second entry's bytes
        Assert.Equal(DmaCheckClass.MissingSyncForCpu, Assert.Single(checker.Reports).Class);
        checker.ClearReports();
        checker.OnSync(sw, first, 1, DmaDirection.FromDevice, forCpu: true);
        checker.OnUnmap(sw, DmaMapKind.Scatterlist, first, 8192, DmaDirection.FromDevice, 2, default);
    }

    // A bounced scatterlist's entries are in blocks of their own: a CPU read is matched against the entry the
    // device wrote, in its block, not against the first entry's block and the list's total size.
    [Fact]
    public void A_cpu_read_of_a_written_scatterlist_entry_in_another_block_without_sync_is_reported_and_other_bytes_are_not()
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        var other = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        var sg = new DmaScatterlist();
        sg.Add(_block, 0, 2048);
        sg.Add(other, 0, 4096);
        sw.MapScatterlist(sg, DmaDirection.FromDevice);
        ulong second = sg.EntryDma[1];

        sw.Engine.Write(second, new byte[64]); // the device writes the second entry only
        _m.Platform.CpuRead(_block, 2048, new byte[8]); // past the first entry, within the list's total size: not mapped
        _m.Platform.CpuRead(_block, 0, new byte[8]); // the first entry, which the device did not write
        Assert.Empty(_m.Checker.Reports);

        _m.Platform.CpuRead(other, 100, new byte[8]);
        var r = Assert.Single(_m.Checker.Reports);
        Assert.Equal((DmaCheckClass.MissingSyncForCpu, "sw", second, 4096L), (r.Class, r.Device, r.Address, r.Size));

        _m.Checker.ClearReports();
        sw.SyncScatterlistForCpu(sg, DmaDirection.FromDevice);
        _m.Platform.CpuRead(other, 100, new byte[8]);
        Assert.Empty(_m.Checker.Reports);
        sw.UnmapScatterlist(sg, sg.Count, DmaDirection.FromDevice);
        Assert.Empty(_m.Checker.Reports);
    }

    // The same layout seen from a sync: the streaming mapping between two entries of a list is the one a sync of it
    // clears, not the list (whose first entry's address plus its total size would hold it).
    [Fact]
    public void A_sync_of_a_mapping_between_the_bounce_slots_of_a_scatterlist_clears_that_mapping()
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        var checker = _m.Checker;
        var other = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        const ulong first = 0x10000, second = 0x13000, between = 0x11000;
        checker.OnMap(sw, DmaMapKind.Scatterlist, first, _block, 0, 8192, DmaDirection.FromDevice, bounced: true, nents: 2,
            segments: [(first, 4096), (second, 4096)], parts: [new(_block, 0, true), new(_block, 4096, true)]);
        checker.OnMap(sw, DmaMapKind.Page, between, other, 0, 4096, DmaDirection.FromDevice, bounced: true, nents: 1);
        checker.OnMappingErrorChecked(sw, between);
        checker.OnDeviceWrite(sw, between, 4096);
        checker.OnSync(sw, between, 4096, DmaDirection.FromDevice, forCpu: true);
        _m.Platform.CpuRead(other, 0, new byte[8]);
        Assert.Empty(checker.Reports);
        checker.OnUnmap(sw, DmaMapKind.Page, between, 4096, DmaDirection.FromDevice, 1, default);
        checker.OnUnmap(sw, DmaMapKind.Scatterlist, first, 8192, DmaDirection.FromDevice, 2, default);
        Assert.Empty(checker.Reports);
    }

    [Fact]
    public void Cached_alias_use_of_a_write_combined_page_is_in_the_report()
    {
        var wc = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        _m.Memory.SetCaching(wc, CachingMode.WriteCombined);
        Assert.Throws<DoubleMappingException>(() => _m.Platform.GetAliasSpan(wc));
        var r = Assert.Single(_m.Checker.Reports);
        Assert.Equal(DmaCheckClass.CachedAliasUse, r.Class);
        Assert.Equal(_m.Memory.PhysicalAddress(wc), r.Address);
        _m.Memory.SetCaching(wc, CachingMode.WriteBack);
        _m.Platform.GetAliasSpan(wc);
        Assert.Single(_m.Checker.Reports);
    }

    [Fact]
    public void Without_the_checker_misuse_that_can_proceed_proceeds_silently()
    {
        using var m = new DmaTestMachine(checker: false);
        Assert.Null(m.Platform.Checker);
        var dev = m.Device("gpu", DmaOpsKind.Direct);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 0);
        ulong d = dev.MapPage(block, 0, 64, DmaDirection.ToDevice);
        dev.UnmapPage(d, 64, DmaDirection.FromDevice); // wrong direction, unchecked: allowed, as in Linux
        Assert.Throws<DmaMappingException>(() => dev.UnmapPage(d, 64, DmaDirection.ToDevice)); // still refused: nothing there
    }

    [Fact]
    public void A_sync_covered_by_one_of_two_overlapping_mappings_is_checked_against_that_one()
    {
        // Found by the model test: of two mappings holding the start, the checker took the first, of another
        // direction, and reported a correct sync as SyncWrongDirection (dma-debug picks the best match).
        ulong from = Map(DmaDirection.FromDevice, offset: 0, size: 1024);
        ulong to = Map(DmaDirection.ToDevice, offset: 512, size: 1024);
        _dev.SyncForCpu(to + 64, 256, DmaDirection.ToDevice);     // inside both: the ToDevice one matches
        _dev.SyncForCpu(from + 600, 256, DmaDirection.FromDevice); // inside both: the FromDevice one matches
        Assert.Empty(_m.Checker.Reports);
        _dev.SyncForCpu(to + 64, 256, DmaDirection.Bidirectional);  // matches neither's direction: reported once
        Only(DmaCheckClass.SyncWrongDirection);
        _dev.UnmapPage(to, 1024, DmaDirection.ToDevice);
        _dev.UnmapPage(from, 1024, DmaDirection.FromDevice);
    }
}
