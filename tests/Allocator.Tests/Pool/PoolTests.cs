using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed class PoolTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 128L << 20 });

    public void Dispose() => _memory.Dispose();

    private PoolAllocator NewPool(ZeroPolicy zeroing = ZeroPolicy.OnAllocate, long limit = 1L << 30, bool poolWriteBack = true)
        => new(_memory, new PoolOptions { LimitBytes = limit, Zeroing = zeroing, PoolWriteBack = poolWriteBack });

    [Fact]
    public void Allocation_starts_at_the_highest_order_that_fits_and_walks_down()
    {
        using var pool = NewPool();
        var blocks = new PageHandle[1000];
        int n = pool.Allocate(1000, CachingMode.WriteCombined, Zone.Normal, blocks);
        Assert.Equal([9, 8, 7, 6, 5, 3], blocks[..n].Select(b => b.Order));
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
    }

    [Fact]
    public void When_no_block_of_an_order_is_free_allocation_falls_back_and_never_goes_back_up()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 4L << 20, NormalBytes = 0 });
        using var pool = new PoolAllocator(memory);
        // Fill arena 0 page by page, take one page of arena 1, then free all of arena 0 but its first page:
        // each 2 MiB arena now has one page in use, so no order-9 block is left anywhere in the zone.
        var fill = new PageHandle[512];
        for (int i = 0; i < fill.Length; i++) fill[i] = memory.AllocateBlock(Zone.Dma32, 0);
        var pin2 = memory.AllocateBlock(Zone.Dma32, 0);
        for (int i = 1; i < fill.Length; i++) memory.FreeBlock(fill[i]);
        var pin1 = fill[0];
        var blocks = new PageHandle[512];
        int n = pool.Allocate(512, CachingMode.WriteBack, Zone.Dma32, blocks);
        var orders = blocks[..n].Select(b => b.Order).ToArray();
        Assert.DoesNotContain(9, orders);
        Assert.Equal(512, orders.Sum(o => 1 << o));
        for (int i = 1; i < orders.Length; i++) Assert.True(orders[i] <= orders[i - 1], $"order went up: {string.Join(",", orders)}");
        Assert.Equal(8, orders[0]);
        memory.FreeBlock(pin1);
        memory.FreeBlock(pin2);
    }

    [Theory]
    [InlineData(CachingMode.WriteBack, ZeroPolicy.OnAllocate)]
    [InlineData(CachingMode.WriteCombined, ZeroPolicy.OnAllocate)]
    [InlineData(CachingMode.Uncached, ZeroPolicy.OnAllocate)]
    [InlineData(CachingMode.WriteBack, ZeroPolicy.OnRelease)]
    [InlineData(CachingMode.WriteCombined, ZeroPolicy.OnRelease)]
    [InlineData(CachingMode.Uncached, ZeroPolicy.OnRelease)]
    public void Pages_handed_out_again_read_zero(CachingMode caching, ZeroPolicy zeroing)
    {
        using var pool = NewPool(zeroing);
        var blocks = new PageHandle[24];
        int n = pool.Allocate(24, caching, Zone.Normal, blocks);
        foreach (var b in blocks[..n]) pool.Memory.GetSpan(b).Fill(0xEE);
        pool.Release(blocks.AsSpan(0, n), caching);

        n = pool.Allocate(24, caching, Zone.Normal, blocks);
        Assert.True(pool.Statistics().Sum(s => s.Hits) >= n); // they really came from the pool
        foreach (var b in blocks[..n])
            Assert.True(pool.Memory.GetSpan(b).IndexOfAnyExcept((byte)0) < 0, $"{b} is not zero");
        pool.Release(blocks.AsSpan(0, n), caching);
    }

    [Fact]
    public void NoClear_skips_clearing_of_pooled_pages_for_callers_that_overwrite_everything()
    {
        using var pool = NewPool(ZeroPolicy.OnAllocate);
        var page = pool.AllocatePage(CachingMode.WriteBack);
        pool.Memory.GetSpan(page)[0] = 0x77;
        pool.ReleasePage(page, CachingMode.WriteBack);
        var again = pool.AllocatePage(CachingMode.WriteBack, Zone.Normal, AllocationFlags.NoClear);
        Assert.Equal(0x77, pool.Memory.GetSpan(again)[0]);
        pool.ReleasePage(again, CachingMode.WriteBack);
    }

    [Theory]
    [InlineData(CachingMode.WriteBack)]
    [InlineData(CachingMode.WriteCombined)]
    [InlineData(CachingMode.Uncached)]
    public void Every_block_has_the_caching_asked_for_fresh_or_pooled(CachingMode caching)
    {
        using var pool = NewPool();
        var blocks = new PageHandle[300];
        for (int round = 0; round < 2; round++)
        {
            int n = pool.Allocate(300, caching, Zone.Dma32, blocks);
            foreach (var b in blocks[..n])
            {
                Assert.Equal(caching, pool.Memory.CachingOf(b));
                Assert.Equal(Zone.Dma32, pool.Memory.ZoneOf(b));
            }
            pool.Release(blocks.AsSpan(0, n), caching);
        }
    }

    [Fact]
    public void A_miss_converts_a_run_of_fresh_blocks_in_one_batch()
    {
        using var pool = NewPool();
        var blocks = new PageHandle[512];
        int n = pool.Allocate(512, CachingMode.Uncached, Zone.Normal, blocks);
        var stats = pool.Statistics().Single(s => s.Caching == CachingMode.Uncached);
        Assert.Equal(1, stats.Misses);
        Assert.Equal(512, stats.TransitionPages);
        pool.Release(blocks.AsSpan(0, n), CachingMode.Uncached);
        n = pool.Allocate(512, CachingMode.Uncached, Zone.Normal, blocks);
        stats = pool.Statistics().Single(s => s.Caching == CachingMode.Uncached);
        Assert.Equal(1, stats.Hits);
        Assert.Equal(512, stats.TransitionPages); // the hit paid no caching change
        pool.Release(blocks.AsSpan(0, n), CachingMode.Uncached);
    }

    [Fact]
    public void A_second_release_of_the_same_handle_is_a_double_free()
    {
        using var pool = NewPool();
        var page = pool.AllocatePage(CachingMode.WriteCombined);
        pool.ReleasePage(page, CachingMode.WriteCombined);
        var e = Assert.Throws<PageHandleException>(() => pool.ReleasePage(page, CachingMode.WriteCombined));
        Assert.Equal(HandleError.DoubleFree, e.Error);
        Assert.Equal(1, pool.Audit());
    }

    [Fact]
    public void Releasing_an_old_handle_of_a_page_someone_else_now_holds_is_stale_and_harmless()
    {
        using var pool = NewPool();
        var page = pool.AllocatePage(CachingMode.WriteBack);
        pool.ReleasePage(page, CachingMode.WriteBack);
        var holder = pool.AllocatePage(CachingMode.WriteBack);
        Assert.Equal(pool.Memory.FrameOf(page), pool.Memory.FrameOf(holder));
        var e = Assert.Throws<PageHandleException>(() => pool.ReleasePage(page, CachingMode.WriteBack));
        Assert.Equal(HandleError.Stale, e.Error);
        pool.Memory.GetSpan(holder)[0] = 1; // the holder still owns it
        pool.ReleasePage(holder, CachingMode.WriteBack);
    }

    [Fact]
    public void A_handle_from_another_pool_is_foreign()
    {
        using var mine = NewPool();
        using var theirs = NewPool();
        var page = theirs.AllocatePage(CachingMode.WriteBack);
        var e = Assert.Throws<PageHandleException>(() => mine.ReleasePage(page, CachingMode.WriteBack));
        Assert.Equal(HandleError.Foreign, e.Error);
        theirs.ReleasePage(page, CachingMode.WriteBack);
        Assert.Equal(0, mine.Audit());
        Assert.Equal(1, theirs.Audit());
    }

    [Fact]
    public void A_handle_from_another_memory_space_is_foreign()
    {
        using var pool = NewPool();
        using var other = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 0, NormalBytes = 2L << 20 });
        var alien = other.AllocateBlock(Zone.Normal, 0);
        Assert.Equal(HandleError.Foreign, Assert.Throws<PageHandleException>(() => pool.ReleasePage(alien, CachingMode.WriteBack)).Error);
    }

    [Fact]
    public void Releasing_with_the_wrong_caching_is_a_mismatch_and_changes_nothing()
    {
        // seeds/000: a page made uncached and given back as cached would be freed by the wrong function.
        using var pool = NewPool();
        var page = pool.AllocatePage(CachingMode.WriteBack);
        pool.Memory.SetCaching(page, CachingMode.Uncached);
        var e = Assert.Throws<PageHandleException>(() => pool.ReleasePage(page, CachingMode.WriteBack));
        Assert.Equal(HandleError.Mismatch, e.Error);
        pool.ReleasePage(page, CachingMode.Uncached); // still held, released correctly into the UC pool
        Assert.Equal(1, pool.Statistics().Single(s => s.Caching == CachingMode.Uncached).PooledPages);
    }

    [Fact]
    public void Releasing_with_a_forged_order_is_a_mismatch()
    {
        using var pool = NewPool();
        var blocks = new PageHandle[2];
        pool.Allocate(2, CachingMode.WriteBack, Zone.Normal, blocks);
        var forged = blocks[0].WithValue(blocks[0].Value & ~(0xFUL << PageHandle.OrderShift));
        Assert.Equal(HandleError.Mismatch, Assert.Throws<PageHandleException>(() => pool.ReleasePage(forged, CachingMode.WriteBack)).Error);
        pool.Release(blocks.AsSpan(0, 1), CachingMode.WriteBack);
    }

    [Fact]
    public void A_bulk_release_with_one_bad_handle_releases_nothing()
    {
        using var pool = NewPool();
        var blocks = new PageHandle[8];
        int n = pool.Allocate(8, CachingMode.WriteBack, Zone.Normal, blocks, AllocationFlags.None);
        Assert.Equal(1, n); // one order-3 block
        var pages = new PageHandle[4];
        for (int i = 0; i < 3; i++) pages[i] = pool.AllocatePage(CachingMode.WriteBack);
        pages[3] = pages[1]; // the same handle twice in one call
        Assert.Equal(HandleError.DoubleFree, Assert.Throws<PageHandleException>(() => pool.Release(pages, CachingMode.WriteBack)).Error);
        Assert.Equal(0, pool.Audit()); // nothing went into the pool
        pool.Release(pages.AsSpan(0, 3), CachingMode.WriteBack);
        pool.Release(blocks.AsSpan(0, 1), CachingMode.WriteBack);
        Assert.Equal(11, pool.Audit());
    }

    [Fact]
    public void A_span_too_small_for_the_count_is_an_argument_error_and_takes_nothing()
    {
        using var pool = NewPool();
        long used = _memory.UsedBytes(Zone.Normal);
        var blocks = new PageHandle[2];
        Assert.Throws<ArgumentException>(() => pool.Allocate(7, CachingMode.WriteBack, Zone.Normal, blocks)); // needs 3 blocks
        Assert.Equal(used, _memory.UsedBytes(Zone.Normal));
        Assert.All(blocks, b => Assert.True(b.IsNull));
    }

    [Fact]
    public void An_exhausted_zone_is_a_typed_error_and_takes_nothing()
    {
        using var pool = NewPool();
        var blocks = new PageHandle[8192 + 1];
        Assert.Throws<ZoneExhaustedException>(() => pool.Allocate(8192 + 1, CachingMode.WriteCombined, Zone.Dma32, blocks));
        Assert.Equal(0, _memory.UsedBytes(Zone.Dma32));
    }

    [Fact]
    public void Write_back_pages_go_straight_to_the_system_when_not_pooled()
    {
        using var pool = NewPool(poolWriteBack: false);
        var page = pool.AllocatePage(CachingMode.WriteBack);
        pool.ReleasePage(page, CachingMode.WriteBack);
        Assert.Equal(0, pool.Count());
        Assert.Equal(0, _memory.UsedBytes(Zone.Normal));
        Assert.Equal(0, pool.Statistics().Single().InUsePages);
    }

    [Fact]
    public void The_shrinker_counts_pooled_pages_and_scan_frees_at_least_what_was_asked()
    {
        using var pool = NewPool();
        var blocks = new PageHandle[4096];
        foreach (var caching in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
        {
            int n = pool.Allocate(1000, caching, Zone.Normal, blocks);
            pool.Release(blocks.AsSpan(0, n), caching);
        }
        Assert.Equal(3000, pool.Count());
        long freed = pool.Scan(500);
        Assert.True(freed >= 500, $"freed {freed}");
        Assert.Equal(3000 - freed, pool.Count());
        Assert.Equal(3000 - freed, pool.Audit());
        Assert.Equal((3000 - freed) * 4096, _memory.UsedBytes(Zone.Normal));
        Assert.Equal(3000 - freed, pool.Scan(long.MaxValue));
        Assert.Equal(0, pool.Count());
        Assert.Equal(0, _memory.UsedBytes(Zone.Normal));
    }

    [Fact]
    public void Scan_frees_in_batches_of_ShrinkBatch_pages_round_robin_over_pool_types()
    {
        using var pool = NewPool();
        var modes = new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached };
        var held = new List<(PageHandle Page, CachingMode Caching)>();
        foreach (var caching in modes)
            for (int i = 0; i < 400; i++) held.Add((pool.AllocatePage(caching), caching));
        foreach (var (page, caching) in held) pool.ReleasePage(page, caching);

        Assert.Equal(3 * PoolAllocator.ShrinkBatch, pool.Scan(3 * PoolAllocator.ShrinkBatch));
        // One batch from each type in turn, not three batches from the first type found.
        foreach (var caching in modes)
        {
            var s = pool.Statistics().Single(x => x.Caching == caching);
            Assert.Equal(PoolAllocator.ShrinkBatch, s.ReturnedPages);
            Assert.Equal(400 - PoolAllocator.ShrinkBatch, s.PooledPages);
        }
    }

    [Fact]
    public void In_use_pages_follow_a_caller_who_switches_a_held_page_to_another_mode()
    {
        using var pool = NewPool();
        var page = pool.AllocatePage(CachingMode.WriteBack);
        Assert.Equal(1, pool.InUsePages(CachingMode.WriteBack));
        pool.Memory.SetCaching(page, CachingMode.Uncached);
        Assert.Equal(0, pool.InUsePages(CachingMode.WriteBack));
        Assert.Equal(1, pool.InUsePages(CachingMode.Uncached));
        pool.ReleasePage(page, CachingMode.Uncached);
        Assert.Equal(0, pool.InUsePages(CachingMode.WriteBack));
        Assert.Equal(0, pool.InUsePages(CachingMode.Uncached));
    }
}
