using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

// Promises of the pool that hold only if they hold while other threads run: a release racing Dispose, and the
// limit while several threads trim at once. More threads than cores, seeded, many rounds; each round checks the
// promise exactly once every thread has stopped.
public sealed class PoolTeardownRaceTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 128L << 20 });

    public void Dispose() => _memory.Dispose();

    private long Used => _memory.UsedBytes(Zone.Dma32) + _memory.UsedBytes(Zone.Normal);

    private static void RunThreads(int threads, Action<int> body)
    {
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        using var start = new Barrier(threads);
        var ts = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            try { body(i); } catch (Exception e) { errors.Enqueue(e); }
        })).ToArray();
        foreach (var t in ts) t.Start();
        foreach (var t in ts) t.Join();
        if (!errors.IsEmpty) throw new AggregateException(errors);
    }

    [Fact]
    public void Pages_released_while_the_pool_is_disposed_all_go_back_to_the_system()
        => ReleaseWhileDisposing((pool, held, caching) => { foreach (var h in held) pool.ReleasePage(h, caching); });

    [Fact]
    public void Blocks_released_in_spans_while_the_pool_is_disposed_all_go_back_to_the_system_without_an_error()
        => ReleaseWhileDisposing((pool, held, caching) => { for (int k = 0; k < held.Length; k += 8) pool.Release(held.AsSpan(k, 8), caching); });

    // Threads each release 64 pages they hold, one way or another, while one more thread disposes the pool; no page
    // may stay in the dead pool, in 200 rounds over the three caching modes.
    private void ReleaseWhileDisposing(Action<PoolAllocator, PageHandle[], CachingMode> release)
    {
        int threads = Math.Max(4, 2 * Environment.ProcessorCount), perThread = 64;
        for (int round = 0; round < 200; round++)
        {
            var pool = new PoolAllocator(_memory, new PoolOptions { LimitBytes = 1L << 30 });
            var caching = (CachingMode)(round % 3);
            var held = new PageHandle[threads][];
            for (int i = 0; i < threads; i++)
            {
                held[i] = new PageHandle[perThread];
                for (int k = 0; k < perThread; k++) held[i][k] = pool.AllocatePage(caching);
            }
            RunThreads(threads + 1, i =>
            {
                if (i == threads) pool.Dispose();
                else release(pool, held[i], caching);
            });
            Assert.True(Used == 0, $"round {round} ({caching}): {Used >> 12} pages released during Dispose are lost in the dead pool");
        }
    }

    [Fact]
    public void A_limit_of_zero_keeps_nothing_once_racing_releases_of_large_blocks_stop()
    {
        int threads = Math.Max(4, 2 * Environment.ProcessorCount), perThread = 8;
        using var pool = new PoolAllocator(_memory, new PoolOptions { LimitBytes = 0 });
        for (int round = 0; round < 200; round++)
        {
            var held = new PageHandle[threads][];
            for (int i = 0; i < threads; i++)
            {
                held[i] = new PageHandle[perThread];
                for (int k = 0; k < perThread; k++) // order-4 blocks: past the per-core magazines' orders, depot only
                    Assert.Equal(1, pool.Allocate(16, CachingMode.WriteCombined, Zone.Normal, held[i].AsSpan(k, 1)));
            }
            RunThreads(threads, i => { foreach (var h in held[i]) pool.ReleasePage(h, CachingMode.WriteCombined); });
            Assert.True(pool.Count() == 0, $"round {round}: a limit of 0 but {pool.Count()} pages stay pooled after every release returned");
            Assert.Equal(0, Used);
        }
    }
}
