using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>Teardown while something is held: memory handed out before a device or its pool went away is never lost.</summary>
public sealed class DmaTeardownTests
{
    [Fact]
    public void Coherent_memory_freed_after_its_device_was_disposed_goes_back_to_the_system()
    {
        using var m = new DmaTestMachine();
        long before = m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal);
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = dev.AllocateCoherent(0);
        dev.Dispose(); // the checker reports the allocation still out, as dma-debug does
        Assert.Contains(m.Checker.Reports, r => r.Class == DmaCheckClass.PendingAtRelease);
        dev.FreeCoherent(block);
        Assert.Equal(before, m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal));
    }

    [Fact]
    public void A_dma_pool_page_freed_after_the_pool_was_disposed_goes_back_to_the_system()
    {
        using var m = new DmaTestMachine();
        long before = m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal);
        var dev = m.Device("nic", DmaOpsKind.Direct, maskBits: 32);
        var pool = new DmaPagePool(dev);
        var page = pool.Allocate(CachingMode.WriteBack, 0);
        pool.Dispose();
        pool.Free(page);
        Assert.Throws<ObjectDisposedException>(() => pool.Free(page)); // twice: the pool no longer knows it
        dev.Dispose();
        Assert.Equal(before, m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal));
    }
}
