using PagePool.Faults;
using PagePool.Memory;
using PagePool.Native;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests.Faults;

/// <summary>
/// Every fault point of the memory layer and the pool: the operation fails with its typed error (or, where the
/// failure cannot be the caller's, is absorbed and counted), nothing is leaked, no byte is lost, and the same
/// operation works once the fault clears. Faults are armed for the test's own thread only.
/// </summary>
public sealed class MemoryFaultTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 16L << 20, NormalBytes = 64L << 20 });

    public void Dispose()
    {
        FaultInjector.DisarmAll();
        _memory.Dispose();
    }

    private long UsedPages => (_memory.UsedBytes(Zone.Dma32) + _memory.UsedBytes(Zone.Normal)) / PhysicalMemory.PageSize;

    [Fact]
    public void A_page_table_change_failing_part_way_through_a_batch_leaves_every_block_in_its_old_mode()
    {
        using var pool = new PoolAllocator(_memory);
        var blocks = new PageHandle[3];
        for (int i = 0; i < 3; i++) blocks[i] = pool.AllocatePage(CachingMode.WriteBack);
        PageHandle[] batch = [blocks[0], blocks[2]]; // not contiguous: two runs, two mprotects
        foreach (var h in batch) _memory.Write(h, 100, [1, 2, 3]);

        FaultInjector.Arm(FaultPoint.Mprotect, skip: 1);
        var e = Assert.Throws<NativeCallException>(() => _memory.SetCaching(batch, CachingMode.WriteCombined));
        Assert.Equal("mprotect", e.Operation);

        foreach (var h in batch) Assert.Equal(CachingMode.WriteBack, _memory.CachingOf(h));
        Assert.Equal(3, pool.InUsePages(CachingMode.WriteBack));
        Assert.Equal(0, pool.InUsePages(CachingMode.WriteCombined));
        foreach (var h in batch) Assert.Equal([1, 2, 3], _memory.GetSpan(h)[100..103].ToArray());
        _memory.GetAliasSpan(batch[0])[0] = 7; // the cached alias is mapped again: it is a write-back page

        _memory.SetCaching(batch, CachingMode.WriteCombined);
        Assert.Equal(2, pool.InUsePages(CachingMode.WriteCombined));
        pool.Release([blocks[1]], CachingMode.WriteBack);
        pool.Release(batch, CachingMode.WriteCombined);
        Assert.Equal(pool.Count(), pool.Audit());
    }

    [Fact]
    public void A_page_table_change_failing_while_the_shrinker_frees_keeps_the_pages_pooled()
    {
        using var pool = new PoolAllocator(_memory);
        var blocks = new PageHandle[64];
        int n = pool.Allocate(64, CachingMode.WriteCombined, Zone.Normal, blocks);
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
        long pooled = pool.Count(), used = UsedPages;

        FaultInjector.Arm(FaultPoint.Mprotect);
        Assert.Throws<NativeCallException>(() => pool.Scan(long.MaxValue));

        Assert.Equal(pooled, pool.Count());
        Assert.Equal(pooled, pool.Audit());
        Assert.Equal(used, UsedPages);
        Assert.Equal(pooled, pool.Scan(long.MaxValue));
        Assert.Equal(0, UsedPages);
    }

    [Fact]
    public void A_page_table_change_failing_on_fresh_pages_fails_the_allocation_and_changes_nothing()
    {
        using var pool = new PoolAllocator(_memory);
        FaultInjector.Arm(FaultPoint.Mprotect);
        var blocks = new PageHandle[40];
        Assert.Throws<NativeCallException>(() => pool.Allocate(40, CachingMode.Uncached, Zone.Normal, blocks));

        Assert.All(blocks, h => Assert.True(h.IsNull));
        Assert.Equal(0, pool.InUsePages(CachingMode.Uncached));
        Assert.Equal(0, pool.InUsePages(CachingMode.WriteBack));
        Assert.Equal(0, pool.Count());
        Assert.Equal(0, UsedPages);

        int n = pool.Allocate(40, CachingMode.Uncached, Zone.Normal, blocks);
        Assert.Equal(40, blocks[..n].Sum(h => h.PageCount));
        pool.Release(blocks.AsSpan(0, n), CachingMode.Uncached);
    }

    [Fact]
    public void A_refused_punch_still_frees_the_block_and_it_reads_zero_when_handed_out_again()
    {
        var h = _memory.AllocateBlock(Zone.Normal, 2);
        _memory.GetSpan(h).Fill(0xA5);
        FaultInjector.Arm(FaultPoint.Fallocate);
        _memory.FreeBlock(h);

        Assert.Equal(1, _memory.PunchFailures);
        Assert.Equal(0, UsedPages);
        var again = _memory.AllocateBlock(Zone.Normal, 2); // first fit: the same block
        Assert.Equal(-1, _memory.GetSpan(again).IndexOfAnyExcept((byte)0));
        _memory.FreeBlock(again);
        Assert.Equal(1, _memory.PunchFailures);
    }

    [Fact]
    public void A_refused_huge_page_hint_does_not_stop_an_arena_from_mapping()
    {
        long before = FaultInjector.Injected(FaultPoint.Madvise);
        FaultInjector.Arm(FaultPoint.Madvise, count: int.MaxValue);
        var h = _memory.AllocateBlock(Zone.Normal, 0);
        Assert.True(FaultInjector.Injected(FaultPoint.Madvise) > before);
        _memory.FreeBlock(h);
    }

    [Fact]
    public void An_exhausted_dma32_zone_is_a_typed_error_with_nothing_held_and_clears()
    {
        using var pool = new PoolAllocator(_memory);
        FaultInjector.Arm(FaultPoint.Dma32Zone, count: int.MaxValue);
        var blocks = new PageHandle[8];
        var e = Assert.Throws<ZoneExhaustedException>(() => pool.Allocate(8, CachingMode.WriteCombined, Zone.Dma32, blocks));
        Assert.Equal(Zone.Dma32, e.Zone);
        Assert.Equal(0, UsedPages);
        Assert.Equal(0, pool.InUsePages(CachingMode.WriteCombined));

        FaultInjector.Disarm(FaultPoint.Dma32Zone);
        int n = pool.Allocate(8, CachingMode.WriteCombined, Zone.Dma32, blocks);
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
    }
}
