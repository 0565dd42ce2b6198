// Populate takes a token as its interruption point; these calls run to completion.
#pragma warning disable xUnit1051

using PagePool.Memory;
using PagePool.Pool;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests.Concurrency;

/// <summary>
/// Many threads on two cores racing everything at once: pool allocation and release, caching changes of held pages,
/// buffers populated, swapped out by the accounting limit and by the shrinker, restored, destroyed, and the pool
/// shrunk under them. After every phase (all threads joined) the invariants hold: every page the system handed out
/// is pooled or held exactly once, the pool's audit passes, the accounting charges exactly the resident buffer
/// pages, and every byte of every live buffer is what its owner wrote.
/// </summary>
public sealed class RaceTests
{
    private sealed class Held(PageHandle[] blocks, CachingMode caching, int seed)
    {
        internal readonly PageHandle[] Blocks = blocks;
        internal CachingMode Caching = caching;
        internal readonly int Seed = seed;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Allocation_release_caching_swap_and_shrink_race_and_every_page_is_accounted_for_after_each_phase(int seed)
    {
        const int Threads = 8, Phases = 3, StepsPerPhase = 250;
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 256L << 20 });
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 4L << 20 });
        using var store = SwapStore.CreateMemfd();
        var accounting = new BufferAccounting(pool, store, new AccountingOptions { PageLimitBytes = 8L << 20, Dma32LimitBytes = 8L << 20 });
        var pages = new List<Held>[Threads];
        var arrays = new List<(PageArray Array, ulong Sum)>[Threads];
        for (int t = 0; t < Threads; t++) { pages[t] = new(); arrays[t] = new(); }
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();

        for (int phase = 0; phase < Phases; phase++)
        {
            var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
            {
                var rng = new Random(seed * 1000 + phase * 100 + t);
                try
                {
                    for (int step = 0; step < StepsPerPhase; step++)
                        Step(rng, pool, memory, accounting, pages[t], arrays[t], failures);
                }
                catch (Exception e)
                {
                    failures.Enqueue($"thread {t}: {e.GetType().Name}: {e.Message}");
                }
            })).ToList();
            threads.ForEach(x => x.Start());
            threads.ForEach(x => x.Join());
            Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(10)));

            // Invariants with every thread joined.
            long pooled = pool.Audit();
            long inUse = pool.InUsePages(CachingMode.WriteBack) + pool.InUsePages(CachingMode.WriteCombined) + pool.InUsePages(CachingMode.Uncached);
            long used = (memory.UsedBytes(Zone.Dma32) + memory.UsedBytes(Zone.Normal)) / PhysicalMemory.PageSize;
            Assert.Equal(used, pooled + inUse);
            long held = pages.Sum(l => l.Sum(h => (long)h.Blocks.Sum(b => b.PageCount)));
            long resident = arrays.Sum(l => l.Sum(a => (long)a.Array.ResidentPages));
            Assert.Equal(held + resident, inUse);
            Assert.Equal(resident, accounting.Pages);
            foreach (var l in pages) foreach (var h in l) Assert.Null(CheckPattern(memory, h));
        }

        foreach (var l in pages) foreach (var h in l) pool.Release(h.Blocks, h.Caching);
        foreach (var l in arrays)
            foreach (var (array, sum) in l)
            {
                using (array.Reserve())
                {
                    Resident(array);
                    Assert.Equal(sum, TtFixture.Checksum(array));
                }
                array.Dispose();
            }
        Assert.Equal(0, accounting.Pages);
        Assert.Equal(0, store.BytesInUse);
        Assert.Equal(pool.Count(), (memory.UsedBytes(Zone.Dma32) + memory.UsedBytes(Zone.Normal)) / PhysicalMemory.PageSize);
    }

    private static void Step(Random rng, PoolAllocator pool, PhysicalMemory memory, BufferAccounting accounting,
        List<Held> pages, List<(PageArray Array, ulong Sum)> arrays, System.Collections.Concurrent.ConcurrentQueue<string> failures)
    {
        int r = rng.Next(100);
        if (r < 25 && pages.Count < 24)
        {
            var caching = (CachingMode)rng.Next(3);
            int n = 1 + rng.Next(16);
            var blocks = new PageHandle[n];
            int got = pool.Allocate(n, caching, rng.Next(4) == 0 ? Zone.Dma32 : Zone.Normal, blocks);
            var h = new Held(blocks[..got], caching, rng.Next());
            Fill(memory, h);
            pages.Add(h);
        }
        else if (r < 40 && pages.Count > 0)
        {
            int i = rng.Next(pages.Count);
            var h = pages[i];
            if (CheckPattern(memory, h) is { } bad) failures.Enqueue(bad);
            pool.Release(h.Blocks, h.Caching);
            pages.RemoveAt(i);
        }
        else if (r < 50 && pages.Count > 0)
        {
            var h = pages[rng.Next(pages.Count)];
            var to = (CachingMode)rng.Next(3);
            memory.SetCaching(h.Blocks, to);
            h.Caching = to;
            if (CheckPattern(memory, h) is { } bad) failures.Enqueue(bad);
        }
        else if (r < 65 && arrays.Count < 8)
        {
            var a = new PageArray(accounting, 1 + rng.Next(64), (CachingMode)rng.Next(3));
            ulong sum;
            using (a.Reserve())
            {
                a.Populate();
                sum = TtFixture.Fill(a, (ulong)rng.Next());
            }
            arrays.Add((a, sum));
        }
        else if (r < 80 && arrays.Count > 0)
        {
            var (a, sum) = arrays[rng.Next(arrays.Count)];
            using (a.Reserve())
            {
                Resident(a); // brings it back if the limit or a scan swapped it out
                if (TtFixture.Checksum(a) != sum) failures.Enqueue($"a buffer of {a.PageCount} pages changed while swapped or resident");
                if (rng.Next(2) == 0) a.SwapOut(1 + rng.Next(a.PageCount));
            }
        }
        else if (r < 88 && arrays.Count > 0)
        {
            int i = rng.Next(arrays.Count);
            var (a, sum) = arrays[i];
            using (a.Reserve())
            {
                Resident(a);
                if (TtFixture.Checksum(a) != sum) failures.Enqueue($"a buffer of {a.PageCount} pages changed before it was destroyed");
            }
            a.Dispose();
            arrays.RemoveAt(i);
        }
        else if (r < 94)
        {
            pool.Scan(rng.Next(256));
        }
        else
        {
            accounting.Scan(rng.Next(128));
        }
    }

    // Populating a populated buffer is an illegal transition (as in TTM): bring it back only when it was swapped out.
    private static void Resident(PageArray a)
    {
        if (a.State != TtState.Populated) a.Populate();
    }

    private static void Fill(PhysicalMemory memory, Held h)
    {
        var rng = new Random(h.Seed);
        foreach (var b in h.Blocks)
        {
            var bytes = new byte[b.PageCount * PhysicalMemory.PageSize];
            rng.NextBytes(bytes);
            memory.Write(b, 0, bytes);
        }
    }

    private static string? CheckPattern(PhysicalMemory memory, Held h)
    {
        var rng = new Random(h.Seed);
        foreach (var b in h.Blocks)
        {
            var expected = new byte[b.PageCount * PhysicalMemory.PageSize];
            rng.NextBytes(expected);
            if (!memory.GetSpan(b).SequenceEqual(expected)) return $"{b} ({h.Caching}) does not hold what its owner wrote";
        }
        return null;
    }
}
