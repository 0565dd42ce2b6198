using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// The checker's index: each device's mappings by start address and by the DMA buckets they cover (8 KiB, or 512 KiB
/// or 32 MiB for large ones, and a list for the rare mapping too spread for those), and the set of bounced mappings
/// the device wrote and the CPU has not synced. A lookup looks at the mappings near its address, whatever the number
/// active; these tests hold it to the same answers at every edge of that index.
/// </summary>
public sealed class DmaCheckerIndexTests : IDisposable
{
    private readonly DmaTestMachine _m = new();

    public void Dispose() => _m.Dispose();

    // A map whose address the driver checks, as the checker requires.
    private static ulong Mapped(DmaDevice dev, PageHandle block, int offset, int size, DmaDirection dir)
    {
        ulong d = dev.MapPage(block, offset, size, dir);
        dev.MappingError(d);
        return d;
    }

    [Fact]
    public void With_ten_thousand_mappings_active_a_sync_and_a_device_write_look_only_at_the_mappings_near_their_address()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Iommu);
        var page = _m.Memory.AllocateBlock(Zone.Normal, 0);
        var held = new ulong[10_000];
        for (int i = 0; i < held.Length; i++) held[i] = Mapped(dev, page, 0, 4096, DmaDirection.ToDevice);
        ulong mid = held[5_000];
        dev.SyncForCpu(mid + 100, 64, DmaDirection.ToDevice);
        Assert.InRange(DmaChecker.LastCandidates, 1, 2); // its own 8 KiB bucket: itself and the neighbouring IOVA
        var other = _m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong written = Mapped(dev, other, 0, 4096, DmaDirection.Bidirectional);
        dev.Engine.Write(written, new byte[4096]);
        Assert.InRange(DmaChecker.LastCandidates, 1, 2);
        dev.UnmapPage(written, 4096, DmaDirection.Bidirectional);
        foreach (var d in held) dev.UnmapPage(d, 4096, DmaDirection.ToDevice);
        Assert.Empty(_m.Checker.Reports);
        Assert.Equal(0, _m.Checker.ActiveMappings(dev));
        Assert.Throws<DmaMappingException>(() => dev.SyncForCpu(mid, 64, DmaDirection.ToDevice)); // gone from its bucket too
        Assert.Equal(DmaCheckClass.SyncUnmapped, Assert.Single(_m.Checker.Reports).Class);
    }

    [Fact]
    public void A_mapping_larger_than_the_buckets_hold_is_found_from_anywhere_inside_it_and_not_past_its_end()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct);
        var checker = _m.Checker;
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 8);
        const ulong start = 0x10_0000;
        const int size = 1 << 20; // 128 buckets of 8 KiB: indexed by 512 KiB
        checker.OnMap(dev, DmaMapKind.Page, start, block, 0, size, DmaDirection.ToDevice, bounced: false, nents: 1);
        checker.OnMappingErrorChecked(dev, start);
        checker.OnSync(dev, start + (900 << 10), 4096, DmaDirection.ToDevice, forCpu: true);
        checker.OnSync(dev, start, size, DmaDirection.ToDevice, forCpu: false);
        Assert.Empty(checker.Reports);
        checker.OnSync(dev, start + size - 100, 200, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(DmaCheckClass.SyncOutOfRange, Assert.Single(checker.Reports).Class);
        checker.ClearReports();
        checker.OnSync(dev, start + size, 1, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(DmaCheckClass.SyncUnmapped, Assert.Single(checker.Reports).Class);
        checker.ClearReports();
        Assert.NotNull(checker.OnUnmap(dev, DmaMapKind.Page, start, size, DmaDirection.ToDevice, 1, default));
        checker.OnSync(dev, start + (900 << 10), 4096, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(DmaCheckClass.SyncUnmapped, Assert.Single(checker.Reports).Class);
    }

    [Fact]
    public void A_mapping_that_straddles_two_buckets_is_found_from_both_and_ends_where_it_ends()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct);
        var checker = _m.Checker;
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 1);
        const ulong start = 0x3800; // 2 KiB before the bucket at 0x4000
        checker.OnMap(dev, DmaMapKind.Single, start, block, 0, 4096, DmaDirection.ToDevice, bounced: false, nents: 1);
        checker.OnMappingErrorChecked(dev, start);
        checker.OnSync(dev, start, 64, DmaDirection.ToDevice, forCpu: true);
        checker.OnSync(dev, 0x4700, 256, DmaDirection.ToDevice, forCpu: true);
        Assert.Empty(checker.Reports);
        checker.OnSync(dev, 0x4800, 1, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(DmaCheckClass.SyncUnmapped, Assert.Single(checker.Reports).Class);
        checker.ClearReports();
        checker.OnUnmap(dev, DmaMapKind.Single, start, 4096, DmaDirection.ToDevice, 1, default);
        Assert.Empty(checker.Reports);
    }

    // Three bounced mappings far apart; device writes reach them through each way the index is read: a write
    // spanning more buckets than the device has (the buckets there are), one spanning two, one inside one.
    [Fact]
    public void A_device_write_marks_each_bounced_mapping_it_touches_and_no_other()
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        var checker = _m.Checker;
        var blocks = new[] { _m.Memory.AllocateBlock(Zone.Dma32, 0), _m.Memory.AllocateBlock(Zone.Dma32, 0), _m.Memory.AllocateBlock(Zone.Dma32, 0) };
        ulong[] at = [0x1_0000, 0x3_0000, 0x9_0000];
        for (int i = 0; i < 3; i++)
        {
            checker.OnMap(sw, DmaMapKind.Page, at[i], blocks[i], 0, 4096, DmaDirection.FromDevice, bounced: true, nents: 1);
            checker.OnMappingErrorChecked(sw, at[i]);
        }
        bool[] Stale()
        {
            checker.ClearReports();
            var stale = new bool[3];
            for (int i = 0; i < 3; i++)
            {
                _m.Platform.CpuRead(blocks[i], 0, new byte[8]);
                stale[i] = checker.ReportCount > 0;
                checker.ClearReports();
            }
            return stale;
        }
        void SyncAll()
        {
            for (int i = 0; i < 3; i++) checker.OnSync(sw, at[i], 4096, DmaDirection.FromDevice, forCpu: true);
        }

        checker.OnDeviceWrite(sw, at[0] + 4000, (int)(at[1] - at[0])); // 16+ buckets: the first two mappings
        Assert.Equal([true, true, false], Stale());
        SyncAll();
        checker.OnDeviceWrite(sw, at[2] - 0x1000, 0x1001); // two buckets, ending on the third's first byte
        Assert.Equal([false, false, true], Stale());
        SyncAll();
        checker.OnDeviceWrite(sw, at[1] + 4096, 64); // just past the second: nothing
        checker.OnDeviceWrite(sw, at[1] - 64, 64);   // just before it: nothing
        Assert.Equal([false, false, false], Stale());
        Assert.Equal(0, checker.DirtyMappings);
        for (int i = 0; i < 3; i++) checker.OnUnmap(sw, DmaMapKind.Page, at[i], 4096, DmaDirection.FromDevice, 1, default);
        Assert.Empty(checker.Reports);
    }

    // A bouncing device's FromDevice mapping of a fresh page, written by the device and not synced.
    private (DmaDevice Sw, PageHandle Block, ulong Dma) WrittenBounce(int size)
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        ulong d = Mapped(sw, block, 0, size, DmaDirection.FromDevice);
        sw.Engine.Write(d, new byte[size]);
        return (sw, block, d);
    }

    [Fact]
    public void An_unmap_the_ops_refuse_keeps_the_mapping_and_its_unsynced_device_write()
    {
        var (sw, block, d) = WrittenBounce(512);
        Assert.Throws<DmaMappingException>(() => sw.UnmapPage(d, 1024, DmaDirection.FromDevice));
        Assert.Equal(DmaCheckClass.WrongSize, Assert.Single(_m.Checker.Reports).Class);
        _m.Checker.ClearReports();
        Assert.Equal(1, _m.Checker.ActiveMappings(sw));
        _m.Platform.CpuRead(block, 0, new byte[8]);
        Assert.Equal(DmaCheckClass.MissingSyncForCpu, Assert.Single(_m.Checker.Reports).Class);
        _m.Checker.ClearReports();
        sw.SyncForCpu(d, 512, DmaDirection.FromDevice);
        _m.Platform.CpuRead(block, 0, new byte[8]);
        sw.UnmapPage(d, 512, DmaDirection.FromDevice);
        Assert.Empty(_m.Checker.Reports);
        Assert.Equal(0, _m.Checker.DirtyMappings);
    }

    [Fact]
    public void Releasing_a_device_reports_its_written_mapping_once_and_forgets_it()
    {
        var (sw, block, _) = WrittenBounce(256);
        Assert.Equal(1, _m.Checker.DirtyMappings);
        sw.Dispose();
        Assert.Equal(DmaCheckClass.PendingAtRelease, Assert.Single(_m.Checker.Reports).Class);
        Assert.Equal(0, _m.Checker.DirtyMappings);
        _m.Platform.CpuRead(block, 0, new byte[8]);
        Assert.Single(_m.Checker.Reports);
    }

    [Fact]
    public void Active_mappings_of_no_device_or_of_another_platforms_device_is_a_typed_error()
    {
        using var other = new DmaTestMachine();
        var foreign = other.Device("elsewhere", DmaOpsKind.Iommu);
        Assert.Throws<ArgumentNullException>(() => _m.Checker.ActiveMappings(null!));
        var e = Assert.Throws<ArgumentException>(() => _m.Checker.ActiveMappings(foreign));
        Assert.Contains("elsewhere", e.Message);
        using var unchecked_ = new DmaTestMachine(checker: false);
        Assert.Throws<ArgumentException>(() => _m.Checker.ActiveMappings(unchecked_.Device("plain", DmaOpsKind.Direct)));
    }

    // A mapping is indexed at the first level of buckets (8 KiB, 512 KiB, 32 MiB) where it spans at most 64 of them:
    // at each edge it is found from its first and last byte while mapped, and from neither once unmapped (an unmap
    // that looked for it at another level would leave it).
    [Theory]
    [InlineData(64L << 13, 0)]             // 64 buckets of 8 KiB
    [InlineData(65L << 13, 1)]             // one more: 2 of 512 KiB
    [InlineData(64L << 19, 1)]             // 64 buckets of 512 KiB (32 MiB)
    [InlineData((64L << 19) + (1 << 13), 2)] // past them: 2 of 32 MiB
    public void A_mapping_at_the_edge_of_a_level_of_buckets_is_indexed_there_found_while_mapped_and_gone_once_unmapped(long size, int level)
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct);
        var checker = _m.Checker;
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        const ulong start = 0x4000_0000; // aligned to every level's bucket
        checker.OnMap(dev, DmaMapKind.Page, start, block, 0, (int)size, DmaDirection.ToDevice, bounced: false, nents: 1);
        checker.OnMappingErrorChecked(dev, start);
        var shape = dev.CheckerTable!.Shape;
        Assert.Equal(level, new[] { shape.Level0, shape.Level1, shape.Level2 }.ToList().IndexOf(1));
        Assert.Equal(0, shape.Unbucketed);
        checker.OnSync(dev, start + (ulong)size - 1, 1, DmaDirection.ToDevice, forCpu: true);
        checker.OnSync(dev, start, 1, DmaDirection.ToDevice, forCpu: true);
        Assert.Empty(checker.Reports);
        checker.OnUnmap(dev, DmaMapKind.Page, start, size, DmaDirection.ToDevice, 1, default);
        Assert.Equal((0, 0, 0, 0), dev.CheckerTable!.Shape);
        // Another mapping at the same level, 4 GiB away, makes the level read again: nothing of the first is left in it.
        checker.OnMap(dev, DmaMapKind.Page, start + 0x1_0000_0000, block, 0, (int)size, DmaDirection.ToDevice, bounced: false, nents: 1);
        checker.OnSync(dev, start + (ulong)size - 1, 1, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(0, DmaChecker.LastCandidates);
        checker.OnSync(dev, start, 1, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(0, DmaChecker.LastCandidates);
        Assert.All(checker.Reports, r => Assert.Equal(DmaCheckClass.SyncUnmapped, r.Class));
        Assert.Equal(2, checker.ReportCount);
    }

    // A scatterlist of 128 neighbouring 4 KiB entries covers 64 buckets of 8 KiB, not 128: it is indexed there (one
    // bucket per entry counted it past every level, onto the list every lookup reads).
    [Fact]
    public void A_scatterlist_of_neighbouring_page_entries_is_indexed_by_the_buckets_its_span_covers()
    {
        var dev = _m.Device("sw", DmaOpsKind.Swiotlb);
        var checker = _m.Checker;
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        const ulong start = 0x4000_0000;
        var segments = Enumerable.Range(0, 128).Select(i => (start + (ulong)i * 4096, 4096)).ToArray();
        checker.OnMap(dev, DmaMapKind.Scatterlist, start, block, 0, 128 * 4096, DmaDirection.ToDevice, bounced: true, nents: 128, segments);
        Assert.Equal((1, 0, 0, 0), dev.CheckerTable!.Shape);
        checker.OnMap(dev, DmaMapKind.Page, 0x8000_0000, block, 0, 4096, DmaDirection.ToDevice, bounced: true, nents: 1);
        checker.OnDeviceWrite(dev, 0x8000_0000, 4096);
        Assert.Equal(1, DmaChecker.LastCandidates); // the scatterlist is not read by a write elsewhere
        checker.OnDeviceWrite(dev, start + 127 * 4096, 4096);
        Assert.Equal(1, DmaChecker.LastCandidates);
        Assert.Equal(2, checker.DirtyMappings);
        checker.OnUnmap(dev, DmaMapKind.Scatterlist, start, 128 * 4096, DmaDirection.ToDevice, 128, default);
        Assert.Equal((1, 0, 0, 0), dev.CheckerTable!.Shape); // the page mapping only
    }

    // A large mapping is in its level's buckets only: a lookup far from it does not look at it (before the levels,
    // every mapping of more than 64 buckets of 8 KiB was read by every lookup on its device).
    [Fact]
    public void A_large_mapping_is_not_a_candidate_of_a_lookup_far_from_it()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct);
        var checker = _m.Checker;
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        const ulong large = 0x4000_0000, small = 0x5000_0000;
        checker.OnMap(dev, DmaMapKind.Page, large, block, 0, 16 << 20, DmaDirection.ToDevice, bounced: false, nents: 1);
        checker.OnMap(dev, DmaMapKind.Page, small, block, 0, 4096, DmaDirection.ToDevice, bounced: false, nents: 1);
        checker.OnSync(dev, small, 64, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(1, DmaChecker.LastCandidates);
        checker.OnSync(dev, large + (15 << 20), 64, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(1, DmaChecker.LastCandidates);
        checker.OnDeviceWrite(dev, large + (8 << 20), 8 << 20); // across half its buckets: still itself alone
        Assert.Equal(1, DmaChecker.LastCandidates);
        checker.OnDeviceWrite(dev, large - (16 << 20), 64 << 20); // more buckets than its level holds: read those there are
        Assert.Equal(1, DmaChecker.LastCandidates);
        Assert.Empty(checker.Reports);
    }

    // A scatterlist whose 65 entries lie in 65 buckets of 32 MiB fits no level: it goes on the list every lookup
    // reads, is found from each entry and not between them, and leaves the list when unmapped.
    [Fact]
    public void A_scatterlist_spread_over_more_than_64_of_the_largest_buckets_is_on_the_unbucketed_list_and_found_from_each_entry()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct);
        var checker = _m.Checker;
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        var segments = Enumerable.Range(0, 65).Select(i => (0x1_0000_0000UL + ((ulong)i << 26), 4096)).ToArray();
        ulong start = segments[0].Item1;
        checker.OnMap(dev, DmaMapKind.Scatterlist, start, block, 0, 65 * 4096, DmaDirection.ToDevice, bounced: false, nents: 65, segments);
        Assert.Equal((0, 0, 0, 1), dev.CheckerTable!.Shape);
        foreach (var (dma, _) in segments) checker.OnSync(dev, dma + 4095, 1, DmaDirection.ToDevice, forCpu: true);
        Assert.Empty(checker.Reports);
        checker.OnSync(dev, segments[1].Item1 + 4096, 1, DmaDirection.ToDevice, forCpu: true);
        Assert.Equal(DmaCheckClass.SyncUnmapped, Assert.Single(checker.Reports).Class);
        checker.ClearReports();
        checker.OnUnmap(dev, DmaMapKind.Scatterlist, start, 65 * 4096, DmaDirection.ToDevice, 65, default);
        Assert.Empty(checker.Reports);
        Assert.Equal((0, 0, 0, 0), dev.CheckerTable!.Shape);
    }

    // A device write over 2,000 neighbouring mappings takes each once, also those in two of its buckets.
    [Fact]
    public void A_long_device_write_takes_each_mapping_it_spans_once()
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        var checker = _m.Checker;
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        const ulong start = 0x80_0800; // every mapping straddles two 8 KiB buckets or fills one
        for (int i = 0; i < 2000; i++)
            checker.OnMap(sw, DmaMapKind.Page, start + (ulong)i * 4096, block, 0, 4096, DmaDirection.ToDevice, bounced: true, nents: 1);
        checker.OnDeviceWrite(sw, start, 2000 * 4096);
        Assert.Equal(2000, DmaChecker.LastCandidates);
        Assert.Equal(2000, checker.DirtyMappings);
        for (int i = 0; i < 2000; i++)
        {
            ulong d = start + (ulong)i * 4096;
            checker.OnMappingErrorChecked(sw, d);
            checker.OnUnmap(sw, DmaMapKind.Page, d, 4096, DmaDirection.ToDevice, 1, default);
        }
        Assert.Equal(0, checker.DirtyMappings);
        Assert.Empty(checker.Reports);
    }

    // A mapping recorded at the start of one still tracked (two unmaps of one address racing, then the address
    // reused) replaces it: the old one's written mark and cache lines go with it, not left behind for ever.
    [Fact]
    public void A_mapping_that_replaces_another_at_its_start_takes_away_its_mark_and_its_lines()
    {
        var sw = _m.Device("sw", DmaOpsKind.Swiotlb);
        var checker = _m.Checker;
        var first = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        var second = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        const ulong at = 0x2_0000;
        checker.OnMap(sw, DmaMapKind.Page, at, first, 0, 256, DmaDirection.FromDevice, bounced: true, nents: 1);
        checker.OnDeviceWrite(sw, at, 256);
        checker.OnMap(sw, DmaMapKind.Page, at, second, 0, 256, DmaDirection.FromDevice, bounced: true, nents: 1);
        Assert.Equal(0, checker.DirtyMappings);
        _m.Platform.CpuRead(first, 0, new byte[8]);
        checker.OnMap(sw, DmaMapKind.Page, 0x3_0000, first, 0, 256, DmaDirection.FromDevice, bounced: true, nents: 1); // its lines are free
        Assert.Empty(checker.Reports);
        Assert.Equal(2, checker.ActiveMappings(sw));
    }

    // Two overlapping mappings of one page, the later one inside the earlier: a sync of the later one's bytes with a
    // direction only it allows is checked against it (dma-debug picks the best match), whichever the index finds first.
    [Fact]
    public void A_sync_inside_two_overlapping_mappings_is_checked_against_the_one_whose_direction_allows_it()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct);
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        ulong whole = Mapped(dev, block, 0, 4096, DmaDirection.ToDevice);
        ulong inner = Mapped(dev, block, 64, 64, DmaDirection.Bidirectional);
        dev.SyncForDevice(inner, 64, DmaDirection.FromDevice);
        dev.SyncForCpu(inner + 8, 32, DmaDirection.FromDevice); // neither starts there: the direction decides
        Assert.Empty(_m.Checker.Reports);
        dev.UnmapPage(inner, 64, DmaDirection.Bidirectional);
        dev.UnmapPage(whole, 4096, DmaDirection.ToDevice);
        Assert.Empty(_m.Checker.Reports);
    }

    // The lines a writable mapping holds are kept in stripes by page: a mapping over two pages holds lines in two.
    [Fact]
    public void A_writable_mapping_over_two_pages_holds_the_lines_of_both_and_gives_both_back()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct);
        var block = _m.Memory.AllocateBlock(Zone.Dma32, 1);
        ulong both = Mapped(dev, block, 2048, 4096, DmaDirection.FromDevice);
        ulong second = Mapped(dev, block, 6080, 64, DmaDirection.FromDevice); // the last line of the first mapping
        Assert.Equal(DmaCheckClass.OverlappingCacheline, Assert.Single(_m.Checker.Reports).Class);
        _m.Checker.ClearReports();
        dev.UnmapPage(second, 64, DmaDirection.FromDevice);
        dev.UnmapPage(both, 4096, DmaDirection.FromDevice);
        foreach (int offset in new[] { 2048, 6080 }) // a line of each page: free again
        {
            second = Mapped(dev, block, offset, 64, DmaDirection.FromDevice);
            dev.UnmapPage(second, 64, DmaDirection.FromDevice);
        }
        Assert.Empty(_m.Checker.Reports);
    }

    // Eight threads (more than this machine's two cores) on three devices, two of them bouncing (their writes mark
    // mappings in the shared written set), every call the checker sees: at the end nothing is tracked, nothing is
    // marked written, and every cache line a writable mapping held is free again.
    [Fact]
    public void Eight_threads_on_three_devices_leave_the_checker_empty_and_every_cache_line_free()
    {
        var devices = new[] { _m.Device("sw1", DmaOpsKind.Swiotlb), _m.Device("sw2", DmaOpsKind.Swiotlb), _m.Device("iommu", DmaOpsKind.Iommu) };
        var pages = Enumerable.Range(0, 8).Select(_ => _m.Memory.AllocateBlock(Zone.Dma32, 0)).ToArray();
        using var start = new Barrier(8);
        var threads = Enumerable.Range(0, 8).Select(t => new Thread(() =>
        {
            var dev = devices[t % 3];
            var data = DmaTestMachine.Pattern(1024, t);
            var back = new byte[1024];
            start.SignalAndWait();
            for (int i = 0; i < 1500; i++)
            {
                int offset = (i & 3) * 1024;
                ulong d = Mapped(dev, pages[t], offset, 1024, DmaDirection.Bidirectional);
                dev.Engine.Write(d, data);
                if ((i & 7) == 0) // written and unmapped without a sync: the unmap takes the mark away
                {
                    dev.UnmapPage(d, 1024, DmaDirection.Bidirectional);
                    continue;
                }
                dev.SyncForCpu(d, 1024, DmaDirection.Bidirectional);
                _m.Platform.CpuRead(pages[t], offset, back);
                dev.UnmapPage(d, 1024, DmaDirection.Bidirectional);
            }
        })).ToArray();
        foreach (var th in threads) th.Start();
        foreach (var th in threads) th.Join();
        Assert.Empty(_m.Checker.Reports);
        Assert.All(devices, d => Assert.Equal(0, _m.Checker.ActiveMappings(d)));
        Assert.Equal(0, _m.Checker.DirtyMappings);
        foreach (var p in pages) // each page's lines held once more: no overlap is left from the run
        {
            ulong d = Mapped(devices[0], p, 0, 4096, DmaDirection.FromDevice);
            devices[0].UnmapPage(d, 4096, DmaDirection.FromDevice);
        }
        Assert.Empty(_m.Checker.Reports);
    }
}
