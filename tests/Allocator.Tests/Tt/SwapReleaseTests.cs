// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using PagePool.Faults;
using PagePool.Memory;
using PagePool.Native;
using PagePool.Pool;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>
/// Swap-out and purge give a buffer's pages straight back to the system in one batch (PoolAllocator.ReleaseToSystem):
/// every page leaves, none lands in the pool, the pool's counters say where they went, and a failure half way loses
/// nothing. Faults are armed for the test's own thread only.
/// </summary>
public sealed class SwapReleaseTests : IDisposable
{
    private readonly TtFixture _f = new(memfd: true);

    public void Dispose()
    {
        FaultInjector.DisarmAll();
        _f.Dispose();
    }

    private long Used => _f.Memory.UsedBytes(Zone.Normal);
    private long Returned(CachingMode caching) => _f.Pool.Statistics().Where(s => s.Caching == caching).Sum(s => s.ReturnedPages);

    [Theory]
    [InlineData(CachingMode.WriteBack)]
    [InlineData(CachingMode.WriteCombined)]
    public void Swap_out_returns_every_page_to_the_system_and_none_to_the_pool(CachingMode caching)
    {
        long usedBefore = Used, returnedBefore = Returned(caching);
        using var t = _f.New(1000, caching); // 1000 pages: blocks of several orders
        t.Populate();
        ulong sum = TtFixture.Fill(t, 7);

        Assert.Equal(1000, t.SwapOut());

        Assert.Equal(usedBefore, Used);
        Assert.Equal(0, _f.Pool.Count());
        Assert.Equal(0, _f.Pool.Audit());
        Assert.Equal(0, _f.PoolInUse);
        Assert.Equal(0, _f.Pool.InUsePages(caching));
        Assert.Equal(returnedBefore + 1000, Returned(caching));
        Assert.Equal(0, _f.Memory.PunchFailures);
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void A_partial_swap_out_returns_exactly_the_pages_it_backed_up()
    {
        using var t = _f.New(1024);
        t.Populate();
        long usedFull = Used;
        ulong sum = TtFixture.Fill(t, 8);

        long out1 = t.SwapOut(512);

        Assert.Equal(512, out1);
        Assert.Equal(usedFull - (512L << PhysicalMemory.PageShift), Used);
        Assert.Equal(512, _f.PoolInUse);
        Assert.Equal(0, _f.Pool.Count());
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void A_refused_punch_during_swap_out_still_frees_every_page_and_loses_no_byte()
    {
        long usedBefore = Used;
        using var t = _f.New(1024);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 9);
        FaultInjector.Arm(FaultPoint.Fallocate, skip: 0, count: 1); // the first run's punch fails

        Assert.Equal(1024, t.SwapOut());

        Assert.Equal(1, _f.Memory.PunchFailures);
        Assert.Equal(usedBefore, Used);
        Assert.Equal(0, _f.PoolInUse);
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void A_refused_caching_change_during_swap_out_leaves_the_buffer_its_pages()
    {
        using var t = _f.New(256, CachingMode.WriteCombined);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 10);
        long used = Used, inUse = _f.PoolInUse, returned = Returned(CachingMode.WriteCombined), storeInUse = _f.Store.BytesInUse;
        FaultInjector.Arm(FaultPoint.Mprotect); // WC -> WB on the way back to the system

        Assert.ThrowsAny<NativeCallException>(() => t.SwapOut());

        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(0, t.SwappedPages);
        Assert.Equal(used, Used);
        Assert.Equal(inUse, _f.PoolInUse);
        Assert.Equal(returned, Returned(CachingMode.WriteCombined));
        Assert.Equal(storeInUse, _f.Store.BytesInUse);
        Assert.Equal(sum, TtFixture.Checksum(t));
        FaultInjector.DisarmAll();
        Assert.Equal(256, t.SwapOut()); // works once the fault clears
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void Purge_returns_every_page_to_the_system_and_none_to_the_pool()
    {
        long usedBefore = Used;
        using var t = _f.New(700, CachingMode.Uncached);
        t.Populate();

        t.Purge();

        Assert.Equal(usedBefore, Used);
        Assert.Equal(0, _f.Pool.Count());
        Assert.Equal(0, _f.PoolInUse);
        Assert.Equal(700, Returned(CachingMode.Uncached));
    }

    [Fact]
    public void Unpopulate_still_keeps_the_pages_in_the_pool()
    {
        using var t = _f.New(64);
        t.Populate();

        t.Unpopulate();

        Assert.Equal(64, _f.Pool.Count());
        Assert.Equal(64, _f.Pool.Audit());
    }

    [Fact]
    public void Release_to_system_refuses_a_repeated_handle_and_changes_nothing()
    {
        var blocks = new PageHandle[8];
        int n = _f.Pool.Allocate(8, CachingMode.WriteBack, Zone.Normal, blocks, AllocationFlags.NoClear);
        var held = blocks[..n];
        var twice = held.Append(held[0]).ToArray();
        long used = Used;

        Assert.Throws<PageHandleException>(() => _f.Pool.ReleaseToSystem(twice, CachingMode.WriteBack));

        Assert.Equal(used, Used);
        Assert.Equal(8, _f.PoolInUse);
        _f.Pool.ReleaseToSystem(held, CachingMode.WriteBack); // every handle still valid
        Assert.Equal(0, _f.PoolInUse);
        Assert.Throws<PageHandleException>(() => _f.Pool.ReleaseToSystem(held, CachingMode.WriteBack)); // now stale
    }

    [Fact]
    public void Release_to_system_refuses_a_wrong_caching_and_changes_nothing()
    {
        var blocks = new PageHandle[4];
        int n = _f.Pool.Allocate(4, CachingMode.WriteCombined, Zone.Normal, blocks, AllocationFlags.NoClear);
        long used = Used;

        Assert.Throws<PageHandleException>(() => _f.Pool.ReleaseToSystem(blocks.AsSpan(0, n), CachingMode.WriteBack));

        Assert.Equal(used, Used);
        _f.Pool.ReleaseToSystem(blocks.AsSpan(0, n), CachingMode.WriteCombined);
        Assert.Equal(0, _f.PoolInUse);
    }
}
