using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

public sealed class IommuTests
{
    [Fact]
    public void Exhausting_the_iova_space_is_a_typed_error_naming_the_device_and_the_space_used()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("tiny", DmaOpsKind.Iommu, maskBits: 20); // 256 pages of IOVA space, page 0 reserved
        var block = m.Memory.AllocateBlock(Zone.Normal, 5);
        var maps = new List<ulong>();
        IovaSpaceExhaustedException? full = null;
        for (int i = 0; i < 20 && full is null; i++)
        {
            try { ulong d = dev.MapPage(block, 0, 32 * 4096, DmaDirection.ToDevice); dev.MappingError(d); maps.Add(d); }
            catch (IovaSpaceExhaustedException e) { full = e; }
        }
        Assert.NotNull(full);
        Assert.Equal("tiny", full!.Device);
        Assert.Equal(255, full.SpacePages);
        Assert.Equal(7 * 32, full.UsedPages);
        Assert.Contains("tiny", full.Message);
        Assert.Equal(7, maps.Count);
        Assert.Equal(7, m.Checker.ActiveMappings(dev)); // the failed call tracked nothing
        foreach (var d in maps) dev.UnmapPage(d, 32 * 4096, DmaDirection.ToDevice);
        ulong again = dev.MapPage(block, 0, 32 * 4096, DmaDirection.ToDevice); // space came back
        dev.MappingError(again);
        dev.UnmapPage(again, 32 * 4096, DmaDirection.ToDevice);
    }

    // A 20-bit mask leaves 255 pages of IOVA space (page 0 is reserved): seven mappings of 32 pages, and no room for
    // an eighth.
    private static List<ulong> FillIovaSpace(DmaDevice dev, PageHandle block)
    {
        var maps = new List<ulong>();
        for (int i = 0; i < 7; i++)
        {
            ulong d = dev.MapPage(block, 0, 32 * 4096, DmaDirection.ToDevice);
            dev.MappingError(d);
            maps.Add(d);
        }
        return maps;
    }

    [Fact]
    public void A_map_that_finds_the_iova_space_held_only_by_queued_unmaps_flushes_the_queue_and_succeeds()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("tiny", DmaOpsKind.Iommu, maskBits: 20);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var block = m.Memory.AllocateBlock(Zone.Normal, 5);
        foreach (var d in FillIovaSpace(dev, block)) dev.UnmapPage(d, 32 * 4096, DmaDirection.ToDevice); // queued, not freed
        Assert.Equal(0, q.Flushes);

        ulong again = dev.MapPage(block, 0, 32 * 4096, DmaDirection.ToDevice);

        dev.MappingError(again);
        Assert.True(q.Flushes > 0);
        dev.UnmapPage(again, 32 * 4096, DmaDirection.ToDevice);
    }

    [Fact]
    public void In_deferred_mode_a_space_still_full_after_flushing_the_queue_is_a_typed_error_naming_the_device()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("tiny", DmaOpsKind.Iommu, maskBits: 20);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var block = m.Memory.AllocateBlock(Zone.Normal, 5);
        var held = FillIovaSpace(dev, block);
        ulong page = dev.MapPage(block, 0, 4096, DmaDirection.ToDevice);
        dev.MappingError(page);
        dev.UnmapPage(page, 4096, DmaDirection.ToDevice); // one page waits in the queue: not room for 32

        var full = Assert.Throws<IovaSpaceExhaustedException>(() => dev.MapPage(block, 0, 32 * 4096, DmaDirection.ToDevice));

        Assert.True(q.Flushes > 0); // the queue was given back first
        Assert.Equal("tiny", full.Device);
        Assert.Contains("'tiny'", full.Message);
        Assert.Equal((32L, 7 * 32L, 255L), (full.Pages, full.UsedPages, full.SpacePages));
        Assert.Equal(7, m.Checker.ActiveMappings(dev));
        foreach (var d in held) dev.UnmapPage(d, 32 * 4096, DmaDirection.ToDevice);
    }

    [Fact]
    public void Strict_unmap_leaves_no_stale_iotlb_entry()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.MappingError(dma);
        dev.Engine.Write(dma, new byte[] { 1 }); // fills the IOTLB
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
        Assert.Throws<DmaFaultException>(() => dev.Engine.Write(dma, new byte[] { 2 }));
        Assert.Equal(0, dev.StaleIotlbAccesses);
    }

    [Fact]
    public void A_stale_iotlb_report_gives_the_address_and_the_bytes_that_went_through_the_stale_entry()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.MappingError(dma);
        dev.Engine.Write(dma, new byte[8]);
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);

        dev.Engine.Write(dma + 100, new byte[3000]);

        var r = Assert.Single(m.Checker.Reports);
        Assert.Equal((DmaCheckClass.StaleIotlbAccess, dma + 100, 3000L), (r.Class, r.Address, r.Size));
    }

    [Fact]
    public void Deferred_unmap_leaves_the_iotlb_entry_and_the_device_still_reaches_the_page_until_the_flush()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.MappingError(dma);
        dev.Engine.Write(dma, new byte[] { 1 });
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);

        dev.Engine.Write(dma, new byte[] { 0x5A }); // through the stale entry, as real hardware would
        var got = new byte[1];
        m.Memory.Read(block, 0, got);
        Assert.Equal(0x5A, got[0]);
        Assert.Equal(1, dev.StaleIotlbAccesses);
        var r = Assert.Single(m.Checker.Reports);
        Assert.Equal(DmaCheckClass.StaleIotlbAccess, r.Class);
        Assert.Equal(dma, r.Address);

        ((IommuOps)dev.Ops).Domain.Queue!.FlushAll();
        Assert.Throws<DmaFaultException>(() => dev.Engine.Write(dma, new byte[] { 2 }));
    }

    [Fact]
    public void An_iotlb_entry_filled_after_a_full_flush_is_live_and_goes_stale_at_the_next_unmap()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong first = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.MappingError(first);
        dev.Engine.Write(first, new byte[] { 1 }); // fills the IOTLB
        dev.UnmapPage(first, 4096, DmaDirection.Bidirectional);
        q.FlushAll(); // a new epoch: the entry above is gone

        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.MappingError(dma);
        dev.Engine.Write(dma, new byte[] { 7 }); // a walk, and an entry of the new epoch
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
        dev.Engine.Write(dma, new byte[] { 9 }); // reached through that entry until the next flush
        Assert.Equal(1, dev.StaleIotlbAccesses);
        q.FlushAll();
        Assert.Throws<DmaFaultException>(() => dev.Engine.Write(dma, new byte[] { 3 }));
        var got = new byte[1];
        m.Memory.Read(block, 0, got);
        Assert.Equal(9, got[0]);
    }

    [Fact]
    public void The_flush_queue_flushes_when_it_holds_its_entry_limit()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1), flushEntries: 8);
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        // Pin the thread's queue: the flush happens on the queue of the CPU doing the unmaps.
        for (int i = 0; i < 7; i++)
        {
            ulong d = dev.MapPage(block, 0, 64, DmaDirection.ToDevice);
            dev.MappingError(d);
            dev.UnmapPage(d, 64, DmaDirection.ToDevice);
        }
        long before = q.Flushes;
        for (int i = 0; i < 8 * Environment.ProcessorCount + 1; i++)
        {
            ulong d = dev.MapPage(block, 0, 64, DmaDirection.ToDevice);
            dev.MappingError(d);
            dev.UnmapPage(d, 64, DmaDirection.ToDevice);
        }
        Assert.True(q.Flushes > before);
    }

    // Map and hold n pages on the calling thread's CPU, then unmap them all into that CPU's flush queue.
    private static HashSet<ulong> MapHoldUnmap(DmaDevice dev, PageHandle block, int n)
    {
        var held = new List<ulong>();
        for (int i = 0; i < n; i++)
        {
            ulong d = dev.MapPage(block, 0, 4096, DmaDirection.ToDevice);
            dev.MappingError(d);
            held.Add(d);
        }
        foreach (var d in held) dev.UnmapPage(d, 4096, DmaDirection.ToDevice);
        return held.ToHashSet();
    }

    [Theory]
    [InlineData(false)] // FlushAll (teardown, or a map that found the space full), called on CPU 1
    [InlineData(true)]  // the tick of a timer that runs on CPU 1
    public void A_queue_flushed_on_another_cpu_gives_its_iovas_back_to_the_cpu_that_unmapped_them(bool timer)
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        HashSet<ulong> first = [], again = [];
        Pinned.Run(0, () => first = MapHoldUnmap(dev, block, 5));

        long later = System.Diagnostics.Stopwatch.GetTimestamp() + 2 * 3600 * System.Diagnostics.Stopwatch.Frequency;
        Pinned.Run(1, () => { if (timer) q.FlushExpired(later); else q.FlushAll(); });

        Pinned.Run(0, () => again = MapHoldUnmap(dev, block, 5)); // from CPU 0's cache, not fresh from the tree
        Assert.Equal(1, q.Flushes);
        Assert.True(again.SetEquals(first), $"CPU 0 got {string.Join(",", again)} back, not {string.Join(",", first)}");
    }

    [Fact]
    public void The_timer_takes_no_queue_whose_entries_are_younger_than_the_timeout_nor_an_empty_one()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        Pinned.Run(0, () => MapHoldUnmap(dev, block, 1)); // CPU 0's queue holds one young entry, CPU 1's none

        q.FlushExpired(System.Diagnostics.Stopwatch.GetTimestamp());
        Assert.Equal((0L, 0L), (q.TimerTakes, q.Flushes)); // a CPU unmapping right now would have found its queue

        q.FlushExpired(System.Diagnostics.Stopwatch.GetTimestamp() + 2 * 3600 * System.Diagnostics.Stopwatch.Frequency);
        Assert.Equal((1L, 1L), (q.TimerTakes, q.Flushes)); // the expired one only
    }

    [Fact]
    public void The_flush_queue_flushes_after_its_timeout()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromMilliseconds(10));
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.MappingError(dma);
        dev.Engine.Write(dma, new byte[] { 1 });
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var until = DateTime.UtcNow.AddSeconds(5);
        while (q.Flushes == 0 && DateTime.UtcNow < until) Thread.Sleep(2);
        Assert.Equal(1, q.Flushes);
        Assert.Throws<DmaFaultException>(() => dev.Engine.Write(dma, new byte[] { 2 }));
    }

    [Fact]
    public void Deferred_iovas_are_not_reused_before_the_flush()
    {
        using var m = new DmaTestMachine(deferred: true, flushTimeout: TimeSpan.FromHours(1));
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong first = dev.MapPage(block, 0, 4096, DmaDirection.ToDevice);
        dev.MappingError(first);
        dev.UnmapPage(first, 4096, DmaDirection.ToDevice);
        ulong second = dev.MapPage(block, 0, 4096, DmaDirection.ToDevice);
        dev.MappingError(second);
        Assert.NotEqual(first, second);
        dev.UnmapPage(second, 4096, DmaDirection.ToDevice);
    }

    // iommu_dma_alloc_iova tries below 4 GiB first for a wide mask with flush_rcache false: that try failing
    // only sends the device to its whole space, so it must not empty every CPU's IOVA cache on the way.
    [Fact]
    public void A_failed_first_try_below_4_GiB_leaves_the_iova_caches_alone()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("wide", DmaOpsKind.Iommu, maskBits: 48);
        var iova = ((IommuOps)dev.Ops).Domain.Iova;
        for (ulong chunk = 1UL << 19; chunk > 0; chunk >>= 1) // fill the space below 4 GiB from the tree
            while (iova.AllocateRange(chunk, IovaAllocator.Dma32BitPfn - 1) != 0) { }
        ulong high = IovaAllocator.Dma32BitPfn << 4, b = 0, dma = 0;
        var page = m.Memory.AllocateBlock(Zone.Normal, 0);
        Pinned.Run(0, () =>
        {
            ulong a = iova.AllocFast(1, high);
            b = iova.AllocFast(1, high);
            iova.FreeFast(a, 1);
            iova.FreeFast(b, 1); // both cached on CPU 0, b on top
            Assert.Equal(2, iova.CachedRanges);

            dma = dev.MapPage(page, 0, 4096, DmaDirection.Bidirectional);
        });

        Assert.Equal(b, dma >> 12); // the whole space's try took the cached range
        Assert.Equal(1, iova.CachedRanges);
    }

    [Fact]
    public void Many_threads_map_write_verify_and_unmap_on_shared_devices()
    {
        using var m = new DmaTestMachine(deferred: true);
        var devs = new[] { m.Device("a", DmaOpsKind.Iommu, maskBits: 32), m.Device("b", DmaOpsKind.Iommu) };
        int threads = Environment.ProcessorCount * 3;
        int errors = 0;
        var ts = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            var block = m.Memory.AllocateBlock(Zone.Normal, 2);
            for (int i = 0; i < 2000; i++)
            {
                var dev = devs[rng.Next(2)];
                int off = rng.Next(0, 8192), len = rng.Next(1, 8192);
                ulong d = dev.MapPage(block, off, len, DmaDirection.Bidirectional);
                dev.MappingError(d);
                var data = new byte[len];
                rng.NextBytes(data);
                dev.Engine.Write(d, data);
                var got = new byte[len];
                m.Memory.Read(block, off, got);
                if (!data.AsSpan().SequenceEqual(got)) Interlocked.Increment(ref errors);
                dev.UnmapPage(d, len, DmaDirection.Bidirectional);
            }
        })).ToList();
        ts.ForEach(t => t.Start());
        ts.ForEach(t => t.Join());
        Assert.Equal(0, errors);
        Assert.Empty(m.Checker.Reports); // one mapping a thread at a time, each thread its own block: nothing to report
    }
}
