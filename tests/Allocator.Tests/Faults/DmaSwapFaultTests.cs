using PagePool.Allocator.Tests.Dma;
using PagePool.Dma;
using PagePool.Faults;
using PagePool.Memory;
using PagePool.Native;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests.Faults;

/// <summary>
/// The fault points of the DMA and swap layers: IOVA space, swiotlb slots, swap-file writes, a full disk and swap
/// reads. Each failure is its typed error, leaves nothing mapped, reserved or lost, and the same operation works once
/// the fault clears. Faults are armed for the test's own thread only.
/// </summary>
public sealed class DmaSwapFaultTests : IDisposable
{
    public void Dispose() => FaultInjector.DisarmAll();

    [Fact]
    public void An_exhausted_iova_space_is_a_typed_error_naming_the_device_and_nothing_stays_mapped()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        FaultInjector.Arm(FaultPoint.IovaSpace, count: int.MaxValue);
        var e = Assert.Throws<IovaSpaceExhaustedException>(() => dev.MapPage(block, 0, 4096, DmaDirection.ToDevice));
        Assert.Contains("gpu", e.Message);
        Assert.Equal(0, m.Checker.ActiveMappings(dev));

        FaultInjector.Disarm(FaultPoint.IovaSpace);
        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.ToDevice);
        Assert.False(dev.MappingError(dma));
        dev.UnmapPage(dma, 4096, DmaDirection.ToDevice);
        dev.Dispose();
        Assert.Empty(m.Checker.Reports);
        m.Memory.FreeBlock(block);
    }

    [Fact]
    public void A_full_swiotlb_is_a_typed_error_with_no_slot_held_and_clears()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("nic", DmaOpsKind.Swiotlb, maskBits: 32);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 0);
        m.Memory.Write(block, 0, DmaTestMachine.Pattern(4096, 3));
        FaultInjector.Arm(FaultPoint.SwiotlbSlots);
        Assert.Throws<SwiotlbFullException>(() => dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional));
        Assert.Equal(0, m.Platform.SwiotlbUsedBytes);
        Assert.Equal(0, m.Checker.ActiveMappings(dev));

        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        var seen = new byte[4096];
        dev.Engine.Read(dma, seen);
        Assert.Equal(DmaTestMachine.Pattern(4096, 3), seen); // the bounce carried the page's bytes
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
        Assert.Equal(0, m.Platform.SwiotlbUsedBytes);
        dev.Dispose();
        m.Memory.FreeBlock(block);
    }

    [Theory]
    [InlineData(FaultPoint.SwapWrite, "EIO")]
    [InlineData(FaultPoint.SwapDiskFull, "ENOSPC")]
    public void A_failed_swap_write_keeps_the_buffer_resident_and_intact(FaultPoint point, string errno)
    {
        using var f = new TtFixture();
        using var t = f.New(64, CachingMode.WriteCombined);
        t.Populate(TestContext.Current.CancellationToken);
        ulong sum = TtFixture.Fill(t, 11);
        long written = f.Store.BytesWritten;
        FaultInjector.Arm(point);
        var e = Assert.Throws<SwapStoreException>(() => t.SwapOut());
        Assert.Contains(errno, e.Message);
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(64, t.ResidentPages);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(written, f.Store.BytesWritten);

        Assert.Equal(64, t.SwapOut()); // the fault cleared: the same swap-out goes through
        t.Populate(TestContext.Current.CancellationToken);
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    // A swap-out writes 8 MiB parts and gives each part's pages back while the next is written: a write failing
    // at the third part finds two parts already given back to the system.
    private const int MultiPartPages = (int)(3 * PageArray.BackupPartBytes / 4096);

    [Theory]
    [InlineData(CachingMode.WriteBack)]
    [InlineData(CachingMode.WriteCombined)]
    public void A_write_failing_after_parts_were_given_back_reads_them_back_and_leaves_the_buffer_as_it_was(CachingMode caching)
    {
        using var f = new TtFixture();
        using var t = f.New(MultiPartPages, caching);
        t.Populate(TestContext.Current.CancellationToken);
        ulong sum = TtFixture.Fill(t, 21);
        long charged = f.Accounting.Pages, inUse = f.PoolInUse, readBefore = f.Store.BytesRead;
        FaultInjector.Arm(FaultPoint.SwapWrite, skip: 2);
        Assert.Throws<SwapStoreException>(() => t.SwapOut());
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(MultiPartPages, t.ResidentPages);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(2 * PageArray.BackupPartBytes, f.Store.BytesRead - readBefore); // the two parts given back came back
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(charged, f.Accounting.Pages);
        Assert.Equal(inUse, f.PoolInUse);

        Assert.Equal(MultiPartPages, t.SwapOut()); // the fault cleared: the same swap-out goes through
        t.Populate(TestContext.Current.CancellationToken);
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void When_the_read_back_after_a_failed_write_fails_too_the_given_back_parts_stay_in_the_store_and_populate_restores_every_byte()
    {
        using var f = new TtFixture();
        using var t = f.New(MultiPartPages);
        t.Populate(TestContext.Current.CancellationToken);
        ulong sum = TtFixture.Fill(t, 22);
        FaultInjector.Arm(FaultPoint.SwapWrite, skip: 2);
        f.Store.Faults.FailReads(1);
        Assert.Throws<SwapStoreException>(() => t.SwapOut());
        Assert.Equal(TtState.SwappedOut, t.State); // in part: the third part never left, the first two are in the store
        long inStore = MultiPartPages - t.ResidentPages;
        Assert.True(inStore > 0 && t.ResidentPages > 0, $"{t.ResidentPages} resident pages of {MultiPartPages}");
        Assert.Equal(inStore * 4096, f.Store.BytesInUse);
        Assert.Equal(t.ResidentPages, f.Accounting.Pages);

        t.Populate(TestContext.Current.CancellationToken);
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(MultiPartPages, f.Accounting.Pages);
    }

    [Fact]
    public void A_failed_swap_read_loses_no_byte_and_the_next_populate_restores_the_buffer()
    {
        using var f = new TtFixture();
        using var t = f.New(64, CachingMode.WriteBack);
        t.Populate(TestContext.Current.CancellationToken);
        ulong sum = TtFixture.Fill(t, 12);
        Assert.Equal(64, t.SwapOut());
        FaultInjector.Arm(FaultPoint.SwapRead);
        Assert.Throws<SwapStoreException>(() => t.Populate(TestContext.Current.CancellationToken));
        Assert.NotEqual(TtState.Populated, t.State);

        t.Populate(TestContext.Current.CancellationToken);
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public unsafe void A_failed_mapping_of_restored_pages_keeps_the_batch_in_the_store_and_loses_no_page_or_byte()
    {
        using var f = new TtFixture();
        using var t = f.New(700, CachingMode.WriteCombined); // 512 + 128 + 32 + 16 + 8 + 4 pages: one restore batch, six blocks
        t.Populate(TestContext.Current.CancellationToken);
        ulong sum = TtFixture.Fill(t, 21);
        byte* p = (byte*)t.CpuAddress;
        Assert.Equal(700, t.SwapOut());
        long inStore = f.Store.BytesInUse;

        FaultInjector.Arm(FaultPoint.Mremap, skip: 2); // the third block's mapping fails, after the read
        var e = Assert.Throws<NativeCallException>(() => t.Populate(TestContext.Current.CancellationToken));
        Assert.Contains("mremap", e.Message);
        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(0, t.ResidentPages);
        Assert.Equal(inStore, f.Store.BytesInUse); // the batch's bytes are still in the store
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.PoolInUse); // the pages read into went back to the pool

        t.Populate(TestContext.Current.CancellationToken);
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(sum, TtFixture.Checksum(new ReadOnlySpan<byte>(p, (int)t.Bytes))); // the pointer shows the new pages
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(700, f.PoolInUse);
    }
}
