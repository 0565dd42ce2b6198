using PagePool.Dma;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

public sealed class IovaTests
{
    private const ulong Limit32 = IovaAllocator.Dma32BitPfn - 1;

    [Fact]
    public void Ranges_are_size_aligned_and_handed_out_top_down_from_the_limit()
    {
        var iova = new IovaAllocator(1, 2);
        Assert.Equal(0xFFFUL, iova.Alloc(1, 0xFFF));
        Assert.Equal(0xFFCUL, iova.Alloc(3, 0xFFF)); // 3 pages aligned to 4
        Assert.Equal(0xFF8UL, iova.Alloc(4, 0xFFF));
        Assert.Equal(0xFF7UL, iova.Alloc(1, 0xFFF)); // the first free page below everything handed out
        Assert.Equal(0xFE0UL, iova.Alloc(16, 0xFFF));
    }

    [Fact]
    public void Fast_path_rounds_small_sizes_to_powers_of_two_and_reuses_cached_ranges()
    {
        var iova = new IovaAllocator(1, 2);
        ulong a = iova.AllocFast(3, 0xFFFF);
        Assert.Equal(0UL, a & 3);
        iova.FreeFast(a, 3);
        Assert.True(iova.IsAllocated(a));   // still in the tree: it sits in the CPU cache
        Assert.Equal(1, iova.CachedRanges);
        Assert.Equal(a, iova.AllocFast(4, 0xFFFF)); // same size class: a cache hit
        Assert.Equal(0, iova.CachedRanges);
    }

    [Fact]
    public void A_cached_range_above_the_callers_limit_is_not_handed_out()
    {
        var iova = new IovaAllocator(1, 1);
        ulong high = iova.AllocFast(1, 0xFFFF);
        iova.FreeFast(high, 1);
        ulong low = iova.AllocFast(1, 0xFF);
        Assert.True(low <= 0xFF);
        Assert.Equal(1, iova.CachedRanges);
    }

    [Fact]
    public void Magazines_of_127_overflow_into_the_depot_and_come_back()
    {
        var iova = new IovaAllocator(1, 1);
        var pfns = new List<ulong>();
        for (int i = 0; i < 3 * IovaRcache.MagazineSize + 5; i++) pfns.Add(iova.AllocFast(1, 0xFFFFF));
        foreach (var p in pfns) iova.FreeFast(p, 1);
        Assert.Equal(pfns.Count, iova.CachedRanges); // loaded + previous + depot hold them all
        var again = new HashSet<ulong>();
        for (int i = 0; i < pfns.Count; i++) again.Add(iova.AllocFast(1, 0xFFFFF));
        Assert.True(again.SetEquals(pfns));
        Assert.Equal(0, iova.CachedRanges);
    }

    [Fact]
    public void A_cpu_popping_the_depot_gets_back_the_magazine_it_pushed_before_a_newer_one_of_another_cpu()
    {
        if (Environment.ProcessorCount < 2) return; // one CPU has no other CPU's magazine to be handed
        var iova = new IovaAllocator(1, 2);
        const int Count = 4 * IovaRcache.MagazineSize; // loaded, previous and parked full, the fourth to the depot
        List<ulong> mine = [], theirs = [];
        Pinned.Run(0, () => { for (int i = 0; i < Count; i++) mine.Add(iova.AllocFast(1, 0xFFFFF)); });
        Pinned.Run(1, () => { for (int i = 0; i < Count; i++) theirs.Add(iova.AllocFast(1, 0xFFFFF)); });
        Pinned.Run(0, () => { foreach (var p in mine) iova.FreeFast(p, 1); });
        Pinned.Run(1, () => { foreach (var p in theirs) iova.FreeFast(p, 1); }); // CPU 1's magazine is on top
        Assert.Equal(2, iova.DepotMagazines);

        var again = new HashSet<ulong>();
        Pinned.Run(0, () => { for (int i = 0; i < Count; i++) again.Add(iova.AllocFast(1, 0xFFFFF)); });
        Assert.True(again.SetEquals(mine), $"{again.Intersect(theirs).Count()} of CPU 0's ranges came from CPU 1's magazine");
        Assert.Equal(1, iova.DepotMagazines);
    }

    [Fact]
    public void A_cpu_parks_one_full_magazine_of_its_own_before_the_depot_and_takes_it_back_before_popping_the_depot()
    {
        var iova = new IovaAllocator(1, 1);
        var pfns = new List<ulong>();
        for (int i = 0; i < 4 * IovaRcache.MagazineSize; i++) pfns.Add(iova.AllocFast(1, 0xFFFFF));
        long used = iova.UsedPages;

        foreach (var p in pfns.Take(3 * IovaRcache.MagazineSize)) iova.FreeFast(p, 1); // loaded, previous, parked
        Assert.Equal(0, iova.DepotMagazines);
        foreach (var p in pfns.Skip(3 * IovaRcache.MagazineSize)) iova.FreeFast(p, 1); // the fourth: the depot
        Assert.Equal(1, iova.DepotMagazines);

        var again = new HashSet<ulong>();
        for (int i = 0; i < 3 * IovaRcache.MagazineSize; i++) again.Add(iova.AllocFast(1, 0xFFFFF));
        Assert.Equal(1, iova.DepotMagazines); // three magazines handed out: the parked one came before the depot's
        for (int i = 0; i < IovaRcache.MagazineSize; i++) again.Add(iova.AllocFast(1, 0xFFFFF));
        Assert.Equal(0, iova.DepotMagazines);
        Assert.True(again.SetEquals(pfns));
        Assert.Equal(used, iova.UsedPages); // every range came from the cache, none from the tree
    }

    [Fact]
    public void A_flush_queue_cycle_on_a_cpu_holding_more_ranges_than_two_magazines_never_touches_the_depot()
    {
        // 280 ranges on one CPU against flush batches of 250: the pair of magazines (254) overflows on every batch.
        var iova = new IovaAllocator(1, 1);
        var all = Enumerable.Range(0, 280).Select(_ => iova.AllocFast(1, 0xFFFFF)).ToArray();
        foreach (var p in all) iova.FreeFast(p, 1);
        var ones = Enumerable.Repeat(1UL, 250).ToArray();
        int depotSeen = 0;
        for (int cycle = 0; cycle < 20; cycle++)
        {
            var batch = Enumerable.Range(0, 250).Select(_ => iova.AllocFast(1, 0xFFFFF)).ToArray();
            iova.FreeFastBatch(batch, ones, 0);
            depotSeen = Math.Max(depotSeen, iova.DepotMagazines);
        }
        Assert.Equal(0, depotSeen);
        Assert.Equal(280, iova.CachedRanges);
    }

    [Fact]
    public void Filling_the_depot_and_flushing_the_caches_again_and_again_allocates_no_more_magazine_rooms()
    {
        // 2,000 ranges freed on one CPU: 15 full magazines pushed to the depot; a flush empties them all.
        var iova = new IovaAllocator(1, 1);
        void Cycle()
        {
            var held = Enumerable.Range(0, 2000).Select(_ => iova.AllocFast(1, 0xFFFFF)).ToArray();
            foreach (var p in held) iova.FreeFast(p, 1);
            Assert.True(iova.DepotMagazines >= 10, $"only {iova.DepotMagazines} magazines reached the depot: the test checks nothing");
            iova.FlushCaches();
        }
        Cycle();
        int chunks = iova.MagazineRoomChunks;

        for (int i = 0; i < 20; i++) Cycle();

        Assert.Equal(chunks, iova.MagazineRoomChunks);
        Assert.Equal(0, iova.UsedPages); // and every range went back to the tree
    }

    [Fact]
    public void A_flush_of_the_caches_gives_the_parked_magazine_back_to_the_tree_too()
    {
        var iova = new IovaAllocator(1, 1);
        var pfns = Enumerable.Range(0, 3 * IovaRcache.MagazineSize).Select(_ => iova.AllocFast(1, 0xFFFFF)).ToList();
        foreach (var p in pfns) iova.FreeFast(p, 1);

        iova.FlushCaches();

        Assert.Equal(0, iova.UsedPages);
        Assert.Equal(0, iova.CachedRanges);
        Assert.All(pfns, p => Assert.False(iova.IsAllocated(p)));
        // The magazines a flush emptied serve again: three magazines' worth cached and handed back, none from the tree.
        var fresh = Enumerable.Range(0, pfns.Count).Select(_ => iova.AllocFast(1, 0xFFFFF)).ToList();
        foreach (var p in fresh) iova.FreeFast(p, 1);
        long used = iova.UsedPages;
        var again = Enumerable.Range(0, fresh.Count).Select(_ => iova.AllocFast(1, 0xFFFFF)).ToHashSet();
        Assert.True(again.SetEquals(fresh));
        Assert.Equal(used, iova.UsedPages);
    }

    [Fact]
    public void A_request_below_every_cached_range_goes_to_the_tree_and_leaves_the_cached_ranges_where_they_are()
    {
        var iova = new IovaAllocator(1, 1);
        var high = new List<ulong>();
        for (int i = 0; i < 4 * IovaRcache.MagazineSize; i++) high.Add(iova.AllocFast(1, 0xFFFFF));
        foreach (var p in high) iova.FreeFast(p, 1); // loaded, previous and parked full, one magazine in the depot

        ulong low = iova.AllocFast(1, 0x100); // every cached range lies above this limit: the tree's turn
        Assert.InRange(low, 1UL, 0x100UL);
        Assert.Equal(high.Count, iova.CachedRanges);
        Assert.Equal(1, iova.DepotMagazines);

        for (int k = 0; k < 3; k++) // the magazines keep cycling through the depot
        {
            var again = new List<ulong>();
            for (int i = 0; i < high.Count; i++) again.Add(iova.AllocFast(1, 0xFFFFF));
            Assert.True(again.ToHashSet().SetEquals(high));
            foreach (var p in again) iova.FreeFast(p, 1);
        }
        iova.FlushCaches();
        Assert.Equal(1, iova.UsedPages); // only the low range: no cached range was lost
    }

    [Fact]
    public void Magazines_going_to_the_depot_and_back_allocate_no_memory_once_warm()
    {
        var iova = new IovaAllocator(1, 1);
        var pfns = new ulong[4 * IovaRcache.MagazineSize];
        long allocated = -1;
        int depot = 0;
        Pinned.Run(0, () =>
        {
            void Cycle()
            {
                for (int i = 0; i < pfns.Length; i++) pfns[i] = iova.AllocFast(1, 0xFFFFF);
                foreach (var p in pfns) iova.FreeFast(p, 1);
            }
            Cycle(); // the tree hands out the ranges, the first depot magazine is made
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int k = 0; k < 100; k++) Cycle(); // each: a magazine popped from the depot, one pushed
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            depot = iova.DepotMagazines;
        });
        Assert.Equal(1, depot);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void A_flush_queue_batch_caches_each_range_by_its_size_and_gives_uncached_sizes_to_the_tree()
    {
        var iova = new IovaAllocator(1, 1);
        ulong[] pages = [1, 3, 32, 33, 64];
        var pfns = pages.Select(n => iova.AllocFast(n, 0xFFFFF)).ToArray();
        long used = iova.UsedPages;

        iova.FreeFastBatch(pfns, pages, 0);

        Assert.Equal(3, iova.CachedRanges); // 1, 3 (as 4) and 32 pages: cached sizes
        Assert.False(iova.IsAllocated(pfns[3]));
        Assert.False(iova.IsAllocated(pfns[4]));
        Assert.Equal(used - 33 - 64, iova.UsedPages);
        Assert.Equal(pfns[1], iova.AllocFast(4, 0xFFFFF));
        Assert.Equal(pfns[2], iova.AllocFast(32, 0xFFFFF));
        Assert.Equal(pfns[0], iova.AllocFast(1, 0xFFFFF));
        Assert.Equal(0, iova.CachedRanges);
    }

    [Fact]
    public void After_a_32_bit_failure_larger_32_bit_requests_fail_fast_until_a_range_is_freed()
    {
        var iova = new IovaAllocator(IovaAllocator.Dma32BitPfn - 8, 1); // only 8 pages below 4 GiB
        ulong a = iova.Alloc(8, Limit32);
        Assert.NotEqual(0UL, a);
        Assert.Equal(0UL, iova.Alloc(2, Limit32)); // searched and failed: max32_alloc_size = 2
        Assert.Equal(0UL, iova.Alloc(4, Limit32)); // not searched
        Assert.True(iova.Free(a));
        Assert.NotEqual(0UL, iova.Alloc(4, Limit32));
    }

    [Fact]
    public void On_failure_the_caches_are_flushed_and_the_search_retried_once()
    {
        var iova = new IovaAllocator(0x100, 1);
        var ones = new List<ulong>();
        for (int i = 0; i < 16; i++) ones.Add(iova.AllocFast(1, 0x10F)); // the whole space, in single pages
        foreach (var p in ones) iova.FreeFast(p, 1);                         // all cached, none free in the tree
        Assert.Equal(16, iova.CachedRanges);
        ulong big = iova.AllocFast(16, 0x10F);
        Assert.Equal(0x100UL, big);
        Assert.Equal(0, iova.CachedRanges);
    }

    [Fact]
    public void Public_calls_refuse_sizes_and_limits_that_name_no_range()
    {
        var iova = new IovaAllocator(1);
        Assert.Throws<ArgumentOutOfRangeException>(() => iova.AllocateRange(0, 100));
        Assert.Throws<ArgumentOutOfRangeException>(() => iova.AllocateRange(1, ulong.MaxValue));
        Assert.Throws<ArgumentOutOfRangeException>(() => iova.FreeRange(5, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new IovaAllocator(0));
        Assert.Equal(0, iova.UsedPages);
        Assert.Equal(0UL, iova.AllocateRange(1, 0)); // nothing fits below frame 1: 0 is the failure value
    }

    [Fact]
    public void Freeing_a_range_that_was_never_allocated_is_refused()
    {
        var iova = new IovaAllocator(1, 1);
        Assert.False(iova.Free(1234));
    }

    [Fact]
    public void Threads_more_than_cores_never_get_the_same_range_twice_nor_lose_one()
    {
        var iova = new IovaAllocator(1, Environment.ProcessorCount);
        int threads = Environment.ProcessorCount * 3;
        var live = new System.Collections.Concurrent.ConcurrentDictionary<ulong, int>();
        int dup = 0;
        var ts = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            var mine = new List<(ulong, ulong)>();
            for (int i = 0; i < 20_000; i++)
            {
                if (mine.Count > 8 && rng.Next(8) == 0) // a flush queue's batch
                {
                    var batch = mine[^8..];
                    mine.RemoveRange(mine.Count - 8, 8);
                    foreach (var (p, _) in batch) live.TryRemove(p, out _);
                    iova.FreeFastBatch(batch.Select(b => b.Item1).ToArray(), batch.Select(b => b.Item2).ToArray(), t); // into some CPU's cache, maybe one in use
                }
                else if (mine.Count > 0 && (mine.Count > 64 || rng.Next(2) == 0))
                {
                    var (p, n) = mine[^1];
                    mine.RemoveAt(mine.Count - 1);
                    live.TryRemove(p, out _);
                    iova.FreeFast(p, n);
                }
                else
                {
                    ulong n = (ulong)rng.Next(1, 40);
                    ulong p = iova.AllocFast(n, rng.Next(4) == 0 ? 0x7FFFFUL : 0xFFFFFUL); // a narrower device now and then
                    if (!live.TryAdd(p, 1)) Interlocked.Increment(ref dup);
                    mine.Add((p, n));
                }
            }
            foreach (var (p, n) in mine) { live.TryRemove(p, out _); iova.FreeFast(p, n); }
        })).ToList();
        ts.ForEach(t => t.Start());
        ts.ForEach(t => t.Join());
        Assert.Equal(0, dup);
        iova.FlushCaches();
        Assert.Equal(0, iova.UsedPages);
    }
}
