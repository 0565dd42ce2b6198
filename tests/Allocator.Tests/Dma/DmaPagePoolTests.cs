using PagePool.Dma;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

public sealed class DmaPagePoolTests : IDisposable
{
    private readonly DmaTestMachine _m = new();

    public void Dispose() => _m.Dispose();

    [Fact]
    public void A_pooled_page_keeps_its_dma_address_and_comes_back_zeroed()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Iommu, maskBits: 32);
        using var pool = new DmaPagePool(dev);
        var p = pool.Allocate(CachingMode.WriteCombined, 1);
        Assert.Equal(CachingMode.WriteCombined, _m.Memory.CachingOf(p.Block));
        dev.Engine.Write(p.DmaAddress + 5000, new byte[] { 42 });
        pool.Free(p);
        Assert.Equal(2, pool.PooledPages);
        var again = pool.Allocate(CachingMode.WriteCombined, 1);
        Assert.Equal(p, again);
        var b = new byte[1];
        dev.Engine.Read(again.DmaAddress + 5000, b);
        Assert.Equal(0, b[0]);
        pool.Free(again);
    }

    [Fact]
    public void A_non_coherent_device_gets_no_write_back_pool_pages()
    {
        var dev = _m.Device("arm", DmaOpsKind.Direct, maskBits: 32, coherent: false);
        using var pool = new DmaPagePool(dev);
        Assert.Throws<ArgumentException>(() => pool.Allocate(CachingMode.WriteBack, 0));
        var p = pool.Allocate(CachingMode.WriteCombined, 0);
        pool.Free(p);
        Assert.Equal(1, pool.PooledPages);
    }

    [Fact]
    public void Types_are_kept_apart_by_caching_and_order()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct, maskBits: 32);
        using var pool = new DmaPagePool(dev);
        var wc = pool.Allocate(CachingMode.WriteCombined, 0);
        pool.Free(wc);
        var uc = pool.Allocate(CachingMode.Uncached, 0);
        Assert.NotEqual(wc.Block, uc.Block);
        pool.Free(uc);
    }

    [Fact]
    public void A_pooled_page_of_order_1_is_handed_out_again_only_for_order_1()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct, maskBits: 32);
        using var pool = new DmaPagePool(dev);
        var two = pool.Allocate(CachingMode.WriteCombined, 1);
        pool.Free(two);

        var one = pool.Allocate(CachingMode.WriteCombined, 0);
        Assert.NotEqual(two.Block, one.Block);
        Assert.Equal(0, one.Block.Order);
        Assert.Equal(2, pool.PooledPages); // the order-1 page is still pooled
        Assert.Equal(two, pool.Allocate(CachingMode.WriteCombined, 1));
        pool.Free(one);
        pool.Free(two);
    }

    [Fact]
    public void A_page_given_to_another_devices_pool_is_refused_and_reported()
    {
        var a = _m.Device("a", DmaOpsKind.Direct, maskBits: 32);
        var b = _m.Device("b", DmaOpsKind.Direct, maskBits: 32);
        using var pa = new DmaPagePool(a);
        using var pb = new DmaPagePool(b);
        var page = pa.Allocate(CachingMode.WriteBack, 0);
        Assert.Throws<DmaMappingException>(() => pb.Free(page));
        var r = Assert.Single(_m.Checker.Reports);
        Assert.Equal(DmaCheckClass.WrongPool, r.Class);
        Assert.Equal("b", r.Device);
        Assert.Equal(0, pb.PooledPages);
        pa.Free(page); // still the holder's to give back correctly
    }

    [Fact]
    public void A_cached_page_made_uncached_behind_the_pools_back_is_refused_and_reported()
    {
        var dev = _m.Device("gpu", DmaOpsKind.Direct, maskBits: 32);
        using var pool = new DmaPagePool(dev);
        var page = pool.Allocate(CachingMode.WriteBack, 0);
        _m.Memory.SetCaching(page.Block, CachingMode.Uncached);
        Assert.Throws<DmaMappingException>(() => pool.Free(page));
        Assert.Equal(DmaCheckClass.WrongPool, Assert.Single(_m.Checker.Reports).Class);
        _m.Memory.SetCaching(page.Block, CachingMode.WriteBack);
        pool.Free(page);
        Assert.Equal(1, pool.PooledPages);
    }

    [Fact]
    public void Backends_choose_the_shared_pool_for_streaming_coherent_devices_and_the_dma_pool_otherwise()
    {
        using var shared = new PoolAllocator(_m.Memory);
        var gpu = _m.Device("gpu", DmaOpsKind.Iommu);
        var old = _m.Device("old", DmaOpsKind.Xen, maskBits: 32);
        using var fast = DmaBackend.Choose(gpu, shared);
        using var safe = DmaBackend.Choose(old, shared);
        Assert.False(fast.UsesDmaPool);
        Assert.True(safe.UsesDmaPool);
        foreach (var (backend, dev) in new[] { (fast, gpu), (safe, old) })
        {
            var p = backend.Allocate(CachingMode.WriteBack);
            dev.Engine.Write(p.DmaAddress, new byte[] { 9 });
            var b = new byte[1];
            _m.Platform.CpuRead(p.Block, 0, b);
            Assert.Equal(9, b[0]);
            backend.Free(p);
        }
        Assert.Empty(_m.Checker.Reports);
    }
}
