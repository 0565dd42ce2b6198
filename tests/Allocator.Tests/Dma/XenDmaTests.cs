using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// The story of a 32-bit device under Xen: DMA32 pages whose machine frames lie above 4 GiB bounce through swiotlb;
/// a driver that never syncs reads stale data; coherent memory or correct syncs fix it.
/// </summary>
public sealed class XenDmaTests : IDisposable
{
    private readonly DmaTestMachine _m = new(xen: true);
    private readonly DmaDevice _dev;

    public XenDmaTests() => _dev = _m.Device("radeon", DmaOpsKind.Xen, maskBits: 32);

    public void Dispose() => _m.Dispose();

    // A DMA32 page (pseudo-physical below 4 GiB) whose machine frame is above 4 GiB.
    private PageHandle HighMachinePage()
    {
        for (int i = 0; i < 256; i++)
        {
            var b = _m.Memory.AllocateBlock(Zone.Dma32, 0);
            if (_m.Memory.PhysicalAddress(b) < 1UL << 32 && _m.Memory.MachineAddress(b) >= 1UL << 32) return b;
        }
        throw new InvalidOperationException("the seeded P2M gave no DMA32 page backed above 4 GiB");
    }

    [Fact]
    public void A_driver_that_does_not_sync_reads_stale_data_and_the_checker_says_so()
    {
        var page = HighMachinePage();
        ulong dma = _dev.MapPage(page, 0, 4096, DmaDirection.Bidirectional);
        Assert.False(_dev.MappingError(dma));
        Assert.True(dma < 1UL << 32);
        Assert.NotEqual(_m.Memory.MachineAddress(page), dma); // bounced

        var frame = DmaTestMachine.Pattern(4096, 7);
        _dev.Engine.Write(dma, frame);          // the GPU writes its results
        var seen = new byte[4096];
        _m.Platform.CpuRead(page, 0, seen);      // the driver reads without syncing
        Assert.NotEqual(frame, seen);
        Assert.All(seen, b => Assert.Equal(0, b)); // what the page held before: stale
        var r = Assert.Single(_m.Checker.Reports);
        Assert.Equal(DmaCheckClass.MissingSyncForCpu, r.Class);
        Assert.Equal("radeon", r.Device);
        Assert.Equal(dma, r.Address);
        _dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
    }

    [Fact]
    public void Fix_one_correct_syncs_make_the_data_right()
    {
        var page = HighMachinePage();
        ulong dma = _dev.MapPage(page, 0, 4096, DmaDirection.Bidirectional);
        _dev.MappingError(dma);
        var frame = DmaTestMachine.Pattern(4096, 8);
        _dev.Engine.Write(dma, frame);
        _dev.SyncForCpu(dma, 4096, DmaDirection.Bidirectional);
        var seen = new byte[4096];
        _m.Platform.CpuRead(page, 0, seen);
        Assert.Equal(frame, seen);

        var cpuData = DmaTestMachine.Pattern(4096, 9); // and the other way: CPU writes, sync for device, GPU reads
        _m.Memory.Write(page, 0, cpuData);
        _dev.SyncForDevice(dma, 4096, DmaDirection.Bidirectional);
        var devSees = new byte[4096];
        _dev.Engine.Read(dma, devSees);
        Assert.Equal(cpuData, devSees);
        _dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
        Assert.Empty(_m.Checker.Reports);
    }

    [Fact]
    public void Fix_two_coherent_dma_pool_pages_are_machine_contiguous_below_the_mask_and_need_no_sync()
    {
        using var pool = new DmaPagePool(_dev);
        var p = pool.Allocate(CachingMode.WriteBack, 0);
        Assert.True(p.DmaAddress < 1UL << 32);
        Assert.Equal(_m.Memory.MachineAddress(p.Block), p.DmaAddress);
        var frame = DmaTestMachine.Pattern(4096, 10);
        _dev.Engine.Write(p.DmaAddress, frame);
        var seen = new byte[4096];
        _m.Platform.CpuRead(p.Block, 0, seen);
        Assert.Equal(frame, seen);
        pool.Free(p);
        Assert.Empty(_m.Checker.Reports);
    }

    [Theory]
    [InlineData(64)] // the mask's last address + 1 wraps to 0: coherent memory once never fitted
    [InlineData(40)]
    public void Coherent_memory_for_a_wide_mask_is_machine_contiguous_and_the_device_reaches_it(int maskBits)
    {
        var wide = _m.Device("wide" + maskBits, DmaOpsKind.Xen, maskBits: maskBits);
        var c = wide.AllocateCoherent(1);
        Assert.Equal(_m.Memory.MachineAddress(c.Block), c.DmaAddress);
        var data = DmaTestMachine.Pattern(8192, 11);
        wide.Engine.Write(c.DmaAddress, data);
        var seen = new byte[8192];
        _m.Platform.CpuRead(c.Block, 0, seen);
        Assert.Equal(data, seen);
        wide.FreeCoherent(c);
        Assert.Empty(_m.Checker.Reports);
    }

    [Fact]
    public void Machine_contiguous_pages_below_the_mask_are_not_bounced()
    {
        var c = _m.Memory.AllocateBlock(Zone.Dma32, 0);
        Assert.True(_m.Memory.TryMakeContiguous(c, uint.MaxValue, out ulong machine));
        ulong dma = _dev.MapPage(c, 16, 64, DmaDirection.ToDevice);
        _dev.MappingError(dma);
        Assert.Equal(machine + 16, dma);
        _dev.UnmapPage(dma, 64, DmaDirection.ToDevice);
        Assert.Equal(0, _m.Platform.SwiotlbUsedBytes);
        _m.Memory.DestroyContiguous(c);
    }

    [Fact]
    public void Without_a_bounce_pool_a_Xen_device_still_reaches_a_page_whose_machine_frame_it_can_address()
    {
        using var m = new DmaTestMachine(xen: true, swiotlb: 0);
        var dev = m.Device("nic", DmaOpsKind.Xen, maskBits: 64);
        var page = m.Memory.AllocateBlock(Zone.Dma32, 0);
        ulong dma = dev.MapPage(page, 0, 4096, DmaDirection.Bidirectional);
        Assert.Equal(m.Memory.MachineAddress(page), dma); // no bounce: direct at the machine address
        var frame = DmaTestMachine.Pattern(4096, 11);
        dev.Engine.Write(dma, frame);
        dev.SyncForCpu(dma, 4096, DmaDirection.Bidirectional);
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
        var seen = new byte[4096];
        m.Memory.Read(page, 0, seen);
        Assert.Equal(frame, seen);
        Assert.Equal(-1, m.Platform.Swiotlb.SlotOf(0x1000)); // an empty pool holds no address, under Xen too
        m.Memory.FreeBlock(page);
    }
}
