using System.Diagnostics;
using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// The numbers the DMA layer takes from Linux (iova.c, dma-iommu.c, swiotlb.c), pinned by what they do and written
/// here as literals: a test that read the library's own constant would pass whatever the constant became.
/// </summary>
public sealed class ReferenceBehaviourTests
{
    [Fact]
    public void Iova_magazines_hold_127_ranges_so_the_382nd_free_on_one_cpu_is_the_first_to_reach_the_depot()
    {
        // IOVA_MAG_SIZE 127: a CPU keeps a loaded, a previous and a parked magazine before it pushes to the depot.
        var iova = new IovaAllocator(1, 1);
        var pfns = Enumerable.Range(0, 382).Select(_ => iova.AllocFast(1, 0xFFFFF)).ToList();

        foreach (var p in pfns.Take(381)) iova.FreeFast(p, 1);
        Assert.Equal(0, iova.DepotMagazines);
        iova.FreeFast(pfns[381], 1);
        Assert.Equal(1, iova.DepotMagazines);
        Assert.Equal(382, iova.CachedRanges);
    }

    [Fact]
    public void By_default_the_flush_queue_flushes_at_its_250th_entry_and_not_at_the_249th()
    {
        // Only the timeout is set (to keep the timer out of the count); the entry limit is the default.
        using var m = new DmaTestMachine(SmallMemory(), new DmaPlatformOptions { DeferredFlush = true, FlushTimeout = TimeSpan.FromHours(1) });
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var q = ((IommuOps)dev.Ops).Domain.Queue!;
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        long after249 = -1, after250 = -1;
        Pinned.Run(0, () => // one CPU's queue: each CPU has its own
        {
            for (int i = 1; i <= 250; i++)
            {
                ulong d = dev.MapPage(block, 0, 64, DmaDirection.ToDevice);
                dev.MappingError(d);
                dev.UnmapPage(d, 64, DmaDirection.ToDevice);
                if (i == 249) after249 = q.Flushes;
            }
            after250 = q.Flushes;
        });
        Assert.Equal(0, after249);
        Assert.Equal(1, after250);
    }

    [Fact]
    public void By_default_the_flush_timer_flushes_an_entry_10_ms_old_and_not_one_a_tick_younger()
    {
        // IOVA_FQ_TIMEOUT 10 ms. The ticks are driven by hand with chosen clock readings; the platform's own timer
        // runs too (the default timeout is what is under test), but it flushes nothing that is not 10 ms old by the
        // real clock. An attempt that took that long (the machine stalled) is not evidence either way: retried.
        long tenMs = Stopwatch.Frequency / 100;
        for (int attempt = 1; ; attempt++)
        {
            using var m = new DmaTestMachine(SmallMemory(), new DmaPlatformOptions { DeferredFlush = true });
            var dev = m.Device("gpu", DmaOpsKind.Iommu);
            var q = ((IommuOps)dev.Ops).Domain.Queue!;
            var block = m.Memory.AllocateBlock(Zone.Normal, 0);
            ulong d = dev.MapPage(block, 0, 64, DmaDirection.ToDevice);
            dev.MappingError(d);

            long before = Stopwatch.GetTimestamp();
            dev.UnmapPage(d, 64, DmaDirection.ToDevice); // the entry's time lies in [before, queued]
            long queued = Stopwatch.GetTimestamp();
            q.FlushExpired(before + tenMs - 1);
            long young = q.Flushes;
            q.FlushExpired(queued + tenMs);
            long old = q.Flushes;

            if (Stopwatch.GetTimestamp() - before >= tenMs && attempt < 5) continue;
            Assert.Equal(0, young);
            Assert.Equal(1, old);
            return;
        }
    }

    [Fact]
    public void By_default_the_swiotlb_pool_takes_64_MiB_of_the_dma32_zone()
    {
        using var m = new DmaTestMachine(new MemoryOptions { ArenaBytes = 64L << 20, Dma32Bytes = 64L << 20, NormalBytes = 0 }, new DmaPlatformOptions());
        Assert.Equal(0, m.Memory.UsedBytes(Zone.Dma32));
        m.Device("sw", DmaOpsKind.Swiotlb); // the first bouncing device takes the pool

        Assert.Equal(64L << 20, m.Memory.UsedBytes(Zone.Dma32));
        Assert.Equal(64L << 20, m.Platform.Swiotlb.PoolBytes);
    }

    [Fact]
    public void Swiotlb_slots_are_2_KiB_and_a_mapping_that_would_cross_a_segment_of_128_slots_starts_at_the_next()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("sw", DmaOpsKind.Swiotlb);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 6);
        ulong first = 0, second = 0, whole = 0;
        Pinned.Run(0, () => // CPU 0's area, searched from its start
        {
            first = dev.MapPage(block, 0, 100, DmaDirection.ToDevice);
            second = dev.MapPage(block, 0, 100, DmaDirection.ToDevice);
            whole = dev.MapPage(block, 0, 256 << 10, DmaDirection.ToDevice); // 128 slots: no room left in segment 0
        });
        Assert.Equal(first + 2048, second);
        Assert.Equal(first + 128 * 2048, whole);
        foreach (var d in new[] { first, second }) { dev.MappingError(d); dev.UnmapPage(d, 100, DmaDirection.ToDevice); }
        dev.MappingError(whole);
        dev.UnmapPage(whole, 256 << 10, DmaDirection.ToDevice);
    }

    [Fact]
    public void The_largest_bounced_mapping_is_one_segment_of_256_KiB_and_a_byte_more_is_a_typed_error()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("sw", DmaOpsKind.Swiotlb);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 7);
        ulong dma = dev.MapPage(block, 0, 256 << 10, DmaDirection.ToDevice);
        dev.MappingError(dma);
        dev.UnmapPage(dma, 256 << 10, DmaDirection.ToDevice);

        var e = Assert.Throws<DmaMappingException>(() => dev.MapPage(block, 0, (256 << 10) + 1, DmaDirection.ToDevice));
        Assert.Equal("sw", e.Device);
        Assert.Contains("at most 262144 bytes", e.Message);
        Assert.Equal(0, m.Platform.SwiotlbUsedBytes);
    }

    private static MemoryOptions SmallMemory() => new() { ArenaBytes = 8L << 20, Dma32Bytes = 32L << 20, NormalBytes = 32L << 20 };
}
