using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// A mask too narrow to reach a resource is not that resource being full: the error says what the mask leaves
/// (issue 10's review: "no room ... 0 of 65536 KiB in use" for a bounce pool that lay entirely above the mask).
/// </summary>
public sealed class DmaMaskReachTests
{
    [Fact]
    public void A_swiotlb_pool_above_the_mask_is_out_of_reach_not_full()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("narrow", DmaOpsKind.Swiotlb, maskBits: 20); // 1 MiB; DMA32, and the pool, start at 16 MiB
        var block = m.Memory.AllocateBlock(Zone.Dma32, 0);
        var e = Assert.Throws<SwiotlbOutOfReachException>(() => dev.MapPage(block, 0, 4096, DmaDirection.ToDevice));
        Assert.Equal("narrow", e.Device);
        Assert.Equal(20, e.MaskBits);
        Assert.True(e.PoolStart >= 16UL << 20, $"pool start 0x{e.PoolStart:x}");
        Assert.Contains("20-bit DMA mask", e.Message);
        Assert.Contains($"0x{e.PoolStart:x}", e.Message);
        Assert.DoesNotContain("no room", e.Message);
        Assert.Equal(0, m.Platform.SwiotlbUsedBytes);
        Assert.Equal(0, m.Checker.ActiveMappings(dev)); // the failed call tracked nothing
        m.Memory.FreeBlock(block);
    }

    [Fact]
    public void A_full_swiotlb_reachable_by_the_mask_is_still_reported_full()
    {
        using var m = new DmaTestMachine(swiotlb: 2L << 20);
        var dev = m.Device("sw", DmaOpsKind.Swiotlb, maskBits: 32);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 6);
        var maps = new List<ulong>();
        var full = Assert.Throws<SwiotlbFullException>(() =>
        {
            for (int i = 0; i < 64; i++) { ulong d = dev.MapPage(block, 0, 128 << 10, DmaDirection.ToDevice); dev.MappingError(d); maps.Add(d); }
        });
        Assert.Contains("no room", full.Message);
        foreach (var d in maps) dev.UnmapPage(d, 128 << 10, DmaDirection.ToDevice);
        m.Memory.FreeBlock(block);
    }

    [Fact]
    public void An_iommu_mask_that_leaves_no_iova_space_says_so()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("tiny", DmaOpsKind.Iommu, maskBits: 12); // one page, and IOVA page 0 is reserved
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        var e = Assert.Throws<IovaSpaceExhaustedException>(() => dev.MapPage(block, 0, 4096, DmaDirection.ToDevice));
        Assert.Equal(0, e.SpacePages);
        Assert.Contains("12-bit DMA mask leaves no usable IOVA space", e.Message);
        Assert.DoesNotContain("0 of 0 pages", e.Message);
        m.Memory.FreeBlock(block);
    }

    [Fact]
    public void An_iommu_mask_whose_space_is_smaller_than_the_mapping_says_so()
    {
        using var m = new DmaTestMachine();
        var dev = m.Device("tiny", DmaOpsKind.Iommu, maskBits: 13); // one usable IOVA page
        var block = m.Memory.AllocateBlock(Zone.Normal, 1);
        var e = Assert.Throws<IovaSpaceExhaustedException>(() => dev.MapPage(block, 0, 8192, DmaDirection.ToDevice));
        Assert.Contains("13-bit DMA mask leaves only 1 page(s) of IOVA space, fewer than the 2 asked for", e.Message);
        m.Memory.FreeBlock(block);
    }
}
