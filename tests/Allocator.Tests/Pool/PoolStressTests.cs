using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

// Many threads on few cores: threads are preempted inside the per-core slot and migrate between cores.
[Collection(nameof(RssTests))]
public sealed class PoolStressTests
{
    [Theory]
    [InlineData(ZeroPolicy.OnAllocate, 11)]
    [InlineData(ZeroPolicy.OnRelease, 23)]
    public void Every_page_is_accounted_for_exactly_once_under_concurrent_use(ZeroPolicy zeroing, int seed)
    {
        const int Threads = 8, OpsPerThread = 1000, Phases = 3, PageSpan = 16384;
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 48L << 20, NormalBytes = 64L << 20 });
        // A low limit so pages keep leaving for the system while others allocate, and a shrinker thread on top.
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 8L << 20, Zeroing = zeroing, MagazinePages = 16 });
        var owner = new int[2 * PageSpan]; // by frame offset: which thread holds the page, 0 = nobody
        memory.AllocateBlock(Zone.Dma32, 0); // one page held outside the pool for the whole run
        const ulong Dma32Base = (16UL << 20) >> 12, NormalBase = (4UL << 30) >> 12; // the zones' first frames
        int Slot(PageHandle h) => memory.ZoneOf(h) == Zone.Dma32 ? (int)(memory.FrameOf(h) - Dma32Base) : PageSpan + (int)(memory.FrameOf(h) - NormalBase);

        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        int exhausted = 0;
        int stop = 0;
        var gate = new Lock(); // held by the shrinker per scan, and by the audit between phases
        var shrinker = new Thread(() =>
        {
            while (Volatile.Read(ref stop) == 0)
            {
                lock (gate) pool.Scan(64);
                Thread.Yield();
            }
        });
        shrinker.Start();
        for (int phase = 0; phase < Phases; phase++)
        {
            var workers = Enumerable.Range(1, Threads).Select(t => new Thread(() =>
            {
                var rng = new Random(seed * 1000 + t + 100 * phase);
                var live = new List<(PageHandle[] Blocks, int Count, CachingMode Caching, byte Tag)>();
                for (int op = 0; op < OpsPerThread && failures.IsEmpty; op++)
                {
                    if (live.Count > 0 && (live.Count > 6 || rng.Next(2) == 0))
                    {
                        int i = rng.Next(live.Count);
                        var (blocks, count, caching, tag) = live[i];
                        live.RemoveAt(i);
                        foreach (var b in blocks.AsSpan(0, count))
                        {
                            var span = memory.GetSpan(b);
                            if (span[0] != tag || span[^1] != tag) failures.Enqueue($"thread {t}: {b} was overwritten by another owner");
                            for (int p = 0; p < b.PageCount; p++)
                                if (Interlocked.CompareExchange(ref owner[Slot(b) + p], 0, t) != t) failures.Enqueue($"thread {t}: {b} not owned at release");
                        }
                        pool.Release(blocks.AsSpan(0, count), caching);
                    }
                    else
                    {
                        var caching = (CachingMode)rng.Next(3);
                        var zone = rng.Next(4) == 0 ? Zone.Dma32 : Zone.Normal;
                        int pages = rng.Next(8) == 0 ? rng.Next(64, 600) : rng.Next(1, 24);
                        var blocks = new PageHandle[pages];
                        int count;
                        try { count = pool.Allocate(pages, caching, zone, blocks); }
                        catch (ZoneExhaustedException) { Interlocked.Increment(ref exhausted); continue; } // legitimate; state must stay whole
                        byte tag = (byte)rng.Next(1, 256);
                        foreach (var b in blocks.AsSpan(0, count))
                        {
                            for (int p = 0; p < b.PageCount; p++)
                                if (Interlocked.CompareExchange(ref owner[Slot(b) + p], t, 0) != 0) failures.Enqueue($"thread {t}: {b} handed to two owners");
                            var span = memory.GetSpan(b);
                            if (span.IndexOfAnyExcept((byte)0) >= 0) failures.Enqueue($"thread {t}: {b} not zero");
                            span[0] = tag;
                            span[^1] = tag;
                        }
                        live.Add((blocks, count, caching, tag));
                    }
                }
                foreach (var (blocks, count, caching, _) in live)
                {
                    foreach (var b in blocks.AsSpan(0, count))
                        for (int p = 0; p < b.PageCount; p++) Interlocked.CompareExchange(ref owner[Slot(b) + p], 0, t);
                    pool.Release(blocks.AsSpan(0, count), caching);
                }
            })).ToArray();

            foreach (var w in workers) w.Start();
            foreach (var w in workers) w.Join();
            // After every phase, with the shrinker held at its gate, the whole pool must check out.
            Assert.Empty(failures);
            lock (gate) Assert.Equal(pool.Audit() * 4096 + 4096, memory.UsedBytes(Zone.Dma32) + memory.UsedBytes(Zone.Normal));
        }
        Volatile.Write(ref stop, 1);
        shrinker.Join();

        Assert.Empty(failures);
        Assert.True(exhausted < Threads * OpsPerThread * Phases / 20, $"{exhausted} allocations failed: the zones are too small for the test");
        Assert.All(owner, o => Assert.Equal(0, o));
        long pooled = pool.Audit();
        // Every page the system handed out is either pooled or was the one pinned DMA32 page: none leaked, none lost.
        Assert.Equal(pooled * 4096 + 4096, memory.UsedBytes(Zone.Dma32) + memory.UsedBytes(Zone.Normal));
        var stats = pool.Statistics();
        Assert.True(stats.Sum(s => s.Hits) > 0 && stats.Sum(s => s.ReturnedPages) > 0);
        Assert.Equal(0, stats.Sum(s => s.InUsePages));
    }

    [Fact]
    public void Pages_released_over_the_limit_go_back_to_the_system_and_rss_drops()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 32L << 20, Dma32Bytes = 0, NormalBytes = 256L << 20 });
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 16L << 20 });
        var blocks = new PageHandle[128 * 512];
        int n = pool.Allocate(128 * 256, CachingMode.WriteCombined, Zone.Normal, blocks); // 128 MiB
        foreach (var b in blocks[..n]) memory.GetSpan(b).Fill(3);
        long before = SystemInfo.ResidentBytes();
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
        long after = SystemInfo.ResidentBytes();
        Assert.True(pool.Count() <= (16L << 20) / 4096 + 16 * 1024, $"pooled {pool.Count()} pages");
        Assert.True(before - after >= 96L << 20, $"RSS fell by only {(before - after) >> 20} MiB");
        Assert.Equal(pool.Count() * 4096, memory.UsedBytes(Zone.Normal));
    }
}
