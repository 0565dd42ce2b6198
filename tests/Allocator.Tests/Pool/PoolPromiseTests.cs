using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

// The pool's promises at its edges (issue 9) and its input checks (issue 8). Each test failed on the pool before
// the reclaim rework. Listeners are process-wide, so these run with the other event tests, alone.
[Collection(nameof(RssTests))]
public sealed class PoolPromiseTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 128L << 20 });

    public void Dispose() => _memory.Dispose();

    private PoolAllocator NewPool(long limit = 1L << 30) => new(_memory, new PoolOptions { LimitBytes = limit });

    private long Used => _memory.UsedBytes(Zone.Dma32) + _memory.UsedBytes(Zone.Normal);

    // ---- 1. reachability ----

    [Fact]
    public void A_page_pooled_on_one_cpu_is_reached_from_another_before_the_system()
    {
        if (Environment.ProcessorCount < 2)
        {
            Console.WriteLine("skipped: one CPU");
            return;
        }
        using var pool = NewPool();
        Pinned.Run(0, () => pool.ReleasePage(pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined));
        long misses = pool.Statistics().Sum(s => s.Misses);
        Pinned.Run(1, () => pool.ReleasePage(pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined));
        Assert.Equal(misses, pool.Statistics().Sum(s => s.Misses));
        Assert.Equal(4096, Used);
    }

    // ---- 2. the limit bounds every pooled page ----

    [Fact]
    public void A_limit_of_0_keeps_nothing()
    {
        using var pool = NewPool(limit: 0);
        pool.ReleasePage(pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined);
        var blocks = new PageHandle[64];
        int n = pool.Allocate(64, CachingMode.Uncached, Zone.Normal, blocks);
        pool.Release(blocks.AsSpan(0, n), CachingMode.Uncached);
        Assert.Equal(0, pool.Count());
        Assert.Equal(0, Used);
    }

    [Fact]
    public void The_limit_bounds_pages_in_magazines_too_within_the_stated_per_cpu_slack()
    {
        const long Limit = 256L << 10; // 64 pages
        using var pool = NewPool(limit: Limit);
        foreach (var caching in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
        {
            var blocks = new PageHandle[1024];
            int n = pool.Allocate(1024, caching, Zone.Normal, blocks); // two order-9 blocks
            pool.Release(blocks.AsSpan(0, n), caching);
            var pages = new PageHandle[64];
            for (int i = 0; i < pages.Length; i++) pages[i] = pool.AllocatePage(caching);
            foreach (var p in pages) pool.ReleasePage(p, caching);
        }
        long slackPages = (1L << 20) / 4096 * Environment.ProcessorCount; // at most 1 MiB per CPU
        Assert.True(pool.Count() <= Limit / 4096 + slackPages, $"pooled {pool.Count()} pages over a limit of {Limit / 4096}");
        Assert.Equal(pool.Count() * 4096, Used);
    }

    // ---- 3. trimming stops at the limit ----

    [Fact]
    public void Reaching_the_limit_trims_to_the_limit_not_far_below_it()
    {
        const int LimitPages = 2000;
        using var pool = NewPool(limit: LimitPages * 4096L);
        var held = new List<(PageHandle[], int, CachingMode)>();
        foreach (var caching in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
            for (int i = 0; i < 10; i++)
            {
                var blocks = new PageHandle[170];
                held.Add((blocks, pool.Allocate(170, caching, Zone.Normal, blocks), caching)); // 128+32+8+2 pages
            }
        foreach (var (blocks, n, c) in held) pool.Release(blocks.AsSpan(0, n), c);
        long pooled = pool.Count();
        Assert.True(pooled >= LimitPages - PoolAllocator.ShrinkBatch / 2, $"trimmed to {pooled}, far below the limit of {LimitPages}");
        Assert.True(pooled <= LimitPages, $"{pooled} pooled over a limit of {LimitPages}");
        Assert.All(new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached },
            c => Assert.True(pool.Statistics().Where(s => s.Caching == c).Sum(s => s.PooledPages) > 0, $"no {c} page left"));
    }

    // ---- 4. a failed Allocate changes nothing ----

    [Fact]
    public void A_failed_allocate_puts_pool_blocks_back_in_the_pool_and_keeps_counters_exact()
    {
        using var pool = NewPool();
        var pages = new PageHandle[6];
        for (int i = 0; i < pages.Length; i++) pages[i] = pool.AllocatePage(CachingMode.WriteCombined);
        foreach (var p in pages) pool.ReleasePage(p, CachingMode.WriteCombined);
        long used = Used;
        var blocks = new PageHandle[2];
        for (int round = 0; round < 2; round++)
        {
            // 6 pages: order 2 (fresh) + order 1 (fresh), then the span is full: the pooled pages were never reached
            // or are given back. 8 pages in 2 blocks of 2 fits nothing once order 0 is reached.
            Assert.Throws<ArgumentException>(() => pool.Allocate(7, CachingMode.WriteCombined, Zone.Normal, blocks));
            Assert.All(blocks, b => Assert.True(b.IsNull));
            Assert.Equal(6, pool.Count());
            Assert.Equal(0, pool.InUsePages(CachingMode.WriteCombined));
            Assert.Equal(used, Used);
            Assert.Equal(6, pool.Audit());
        }
    }

    [Fact]
    public void A_failed_allocate_after_a_pool_hit_gives_the_block_back_and_counts_no_hit()
    {
        using var pool = NewPool();
        var pair = new PageHandle[1];
        pool.Allocate(2, CachingMode.Uncached, Zone.Normal, pair); // one order-1 block
        pool.Release(pair, CachingMode.Uncached);
        long hits = pool.Statistics().Sum(s => s.Hits), used = Used;
        var one = new PageHandle[1];
        // Order 1 hits the pool, then order 0 finds the span full.
        Assert.Throws<ArgumentException>(() => pool.Allocate(3, CachingMode.Uncached, Zone.Normal, one));
        Assert.True(one[0].IsNull);
        Assert.Equal(2, pool.Audit());
        Assert.Equal(hits, pool.Statistics().Sum(s => s.Hits));
        Assert.Equal(0, pool.InUsePages(CachingMode.Uncached));
        Assert.Equal(used, Used);
        Assert.Equal(1, pool.Allocate(2, CachingMode.Uncached, Zone.Normal, one)); // and it is handed out again
        Assert.Equal(hits + 1, pool.Statistics().Sum(s => s.Hits));
        pool.Release(one, CachingMode.Uncached);
    }

    [Fact]
    public void An_exhausted_zone_leaves_the_pool_as_it_was()
    {
        using var pool = NewPool();
        var page = pool.AllocatePage(CachingMode.WriteBack, Zone.Dma32);
        pool.ReleasePage(page, CachingMode.WriteBack);
        var blocks = new PageHandle[8193];
        Assert.Throws<ZoneExhaustedException>(() => pool.Allocate(8193, CachingMode.WriteBack, Zone.Dma32, blocks));
        Assert.Equal(0, pool.InUsePages(CachingMode.WriteBack));
        Assert.Equal(Used, pool.Count() * 4096);
    }

    // ---- 5. Dispose with pages held ----

    private sealed class Listener : EventListener
    {
        internal readonly ConcurrentQueue<EventWrittenEventArgs> Events = new();

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == PagePoolEventSource.ProviderName) EnableEvents(source, EventLevel.Informational, PagePoolEventSource.Keywords.Pool);
        }

        protected override void OnEventWritten(EventWrittenEventArgs e) => Events.Enqueue(e);
    }

    [Fact]
    public void Pages_held_at_dispose_are_reported_and_go_to_the_system_when_released_after()
    {
        using var listener = new Listener();
        var pool = NewPool();
        var page = pool.AllocatePage(CachingMode.Uncached);
        var blocks = new PageHandle[16];
        int n = pool.Allocate(16, CachingMode.WriteCombined, Zone.Dma32, blocks);
        pool.Dispose();
        Assert.Contains(listener.Events, e => e.EventName == "PoolDisposedWithPagesHeld" && (long)e.Payload![2]! == 17);
        pool.ReleasePage(page, CachingMode.Uncached);
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
        Assert.Equal(0, Used);
    }

    // ---- 6. the order walk ----

    [Fact]
    public void After_a_miss_the_walk_takes_fresh_pages_and_does_not_go_back_to_the_pool()
    {
        using var pool = NewPool();
        pool.ReleasePage(pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined);
        var blocks = new PageHandle[2];
        int n = pool.Allocate(3, CachingMode.WriteCombined, Zone.Normal, blocks); // order 1 misses, then order 0
        Assert.Equal([1, 0], blocks[..n].Select(b => b.Order));
        Assert.Equal(1, pool.Count()); // TTM's allow_pools: the pooled page stays for the next caller
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
    }

    [Fact]
    public void After_direct_reclaim_the_walk_does_not_climb_back_to_a_higher_order()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 4L << 20, NormalBytes = 0 });
        using var pool = new PoolAllocator(memory);
        var big = new PageHandle[1];
        pool.Allocate(512, CachingMode.Uncached, Zone.Dma32, big);
        pool.Release(big, CachingMode.Uncached);           // one order-9 UC block pooled: the first arena
        var pins = new PageHandle[512];
        for (int i = 0; i < pins.Length; i++) pins[i] = memory.AllocateBlock(Zone.Dma32, 0); // the second arena, held
        var blocks = new PageHandle[2];
        int n = pool.Allocate(2, CachingMode.WriteCombined, Zone.Dma32, blocks); // order 1 fails, order 0 reclaims
        Assert.Equal([0, 0], blocks[..n].Select(b => b.Order));
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
        foreach (var p in pins) memory.FreeBlock(p);
    }

    // ---- input checks and identity (issue 8) ----

    [Fact]
    public void A_pool_needs_a_memory_space()
        => Assert.Equal("memory", Assert.Throws<ArgumentNullException>(() => new PoolAllocator(null!)).ParamName);

    [Fact]
    public void An_unknown_caching_mode_on_release_is_refused_before_anything_changes()
    {
        using var pool = NewPool();
        var page = pool.AllocatePage(CachingMode.WriteBack);
        var blocks = new PageHandle[4];
        int n = pool.Allocate(4, CachingMode.WriteBack, Zone.Normal, blocks);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.ReleasePage(page, (CachingMode)4));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Release(blocks.AsSpan(0, n), (CachingMode)4));
        Assert.Equal(0, pool.Count());
        pool.ReleasePage(page, CachingMode.WriteBack); // still held, still releasable
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteBack);
        Assert.Equal(5, pool.Audit());
    }

    [Fact]
    public void Unknown_allocation_flags_are_refused_before_anything_is_taken()
    {
        using var pool = NewPool();
        pool.ReleasePage(pool.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.AllocatePage(CachingMode.WriteBack, Zone.Normal, (AllocationFlags)8));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.AllocatePage((CachingMode)3));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.AllocatePage(CachingMode.WriteBack, (Zone)2));
        Assert.Equal(1, pool.Audit());
    }

    [Fact]
    public void A_pool_sizes_its_tables_to_use_not_to_the_largest_id()
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var pool = NewPool();
        long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(bytes < 2L << 20, $"a new pool allocated {bytes >> 10} KiB of managed memory");
    }

    [Fact]
    public void A_new_pool_that_reuses_an_old_pool_id_refuses_the_old_pool_handles()
    {
        var old = NewPool();
        var page = old.AllocatePage(CachingMode.WriteBack);
        int id = old.Id;
        old.Dispose();
        var lastId = typeof(PoolAllocator).GetField("s_lastId", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!;
        lastId.SetValue(null, id - 1);
        using var reused = NewPool();
        Assert.Equal(id, reused.Id);
        Assert.Equal(HandleError.Foreign, Assert.Throws<PageHandleException>(() => reused.ReleasePage(page, CachingMode.WriteBack)).Error);
        Assert.Equal(0, reused.Count());
        _memory.FreeBlock(page); // after Dispose the page is the system's to take back
        Assert.Equal(0, Used);
    }
}
