using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>The memory space under misuse: disposed objects, handles of dead spaces, values outside an enum, races.</summary>
public sealed class MemoryMisuseTests
{
    private static MemoryOptions Small => new() { ArenaBytes = 2L << 20, Dma32Bytes = 2L << 20, NormalBytes = 4L << 20 };

    [Theory]
    [InlineData(long.MaxValue)]
    [InlineData((4096L - 1 + 1) * (2L << 20))] // one arena more than the DMA32 zone leaves
    public void A_normal_zone_larger_than_a_space_can_lay_out_is_refused_not_capped(long normalBytes)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new PhysicalMemory(new MemoryOptions
        {
            ArenaBytes = 2L << 20, Dma32Bytes = 2L << 20, NormalBytes = normalBytes,
        }));
        Assert.Equal("NormalBytes", e.ParamName);
        Assert.Contains((4095L * (2L << 20)).ToString(), e.Message); // the most it can be
    }

    [Fact]
    public void The_largest_normal_zone_that_fits_is_laid_out_whole_and_the_default_fits_any_machine()
    {
        using var most = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 2L << 20, NormalBytes = 4095L * (2L << 20) });
        Assert.Equal(4095L * (2L << 20), most.Capacity(Zone.Normal));
        var byDefault = new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 2L << 20 };
        Assert.Equal(Math.Min(SystemInfo.PhysicalMemoryBytes, 4095L * (2L << 20)), byDefault.NormalBytes);
        using var space = new PhysicalMemory(byDefault);
        Assert.Equal(byDefault.NormalBytes / (2L << 20) * (2L << 20), space.Capacity(Zone.Normal));
    }

    public static TheoryData<string> EntryPoints() => new(DisposedCalls.Keys);

    // Every public member that takes the space's state, called on a disposed space with a handle it made when live.
    private static readonly Dictionary<string, Action<PhysicalMemory, PageHandle>> DisposedCalls = new()
    {
        ["AllocateBlock"] = (m, _) => m.AllocateBlock(Zone.Normal, 0),
        ["FreeBlock"] = (m, h) => m.FreeBlock(h),
        ["CachingOf"] = (m, h) => m.CachingOf(h),
        ["SetCaching"] = (m, h) => m.SetCaching(h, CachingMode.WriteCombined),
        ["SetCaching(batch)"] = (m, h) => m.SetCaching([h], CachingMode.Uncached),
        ["GetSpan"] = (m, h) => m.GetSpan(h),
        ["GetAliasSpan"] = (m, h) => m.GetAliasSpan(h),
        ["Write"] = (m, h) => m.Write(h, 0, new byte[8]),
        ["Read"] = (m, h) => m.Read(h, 0, new byte[8]),
        ["FrameOf"] = (m, h) => m.FrameOf(h),
        ["PhysicalAddress"] = (m, h) => m.PhysicalAddress(h),
        ["MachineAddress"] = (m, h) => m.MachineAddress(h),
        ["MachineFrameOf"] = (m, h) => m.MachineFrameOf(1),
        ["ZoneOf"] = (m, h) => m.ZoneOf(h),
        ["MappedBytes"] = (m, _) => m.MappedBytes(Zone.Normal),
        ["UsedBytes"] = (m, _) => m.UsedBytes(Zone.Normal),
        ["Capacity"] = (m, _) => m.Capacity(Zone.Normal),
        ["HandleOf"] = (m, h) => m.HandleOf(h.Value),
        ["TryMakeContiguous"] = (m, h) => m.TryMakeContiguous(h, uint.MaxValue, out ulong _),
        ["DestroyContiguous"] = (m, h) => m.DestroyContiguous(h),
        ["IsMachineContiguous"] = (m, _) => m.IsMachineContiguous(1, 0),
        ["TryPseudoFrameOf"] = (m, h) => m.TryPseudoFrameOf(1, out ulong _),
        ["new PoolAllocator"] = (m, _) => new PoolAllocator(m),
    };

    [Theory]
    [MemberData(nameof(EntryPoints))]
    public void Every_entry_point_of_a_disposed_space_throws_ObjectDisposedException(string entry)
    {
        var memory = new PhysicalMemory(Small);
        var held = memory.AllocateBlock(Zone.Normal, 0);
        memory.Dispose();
        Assert.Throws<ObjectDisposedException>(() => DisposedCalls[entry](memory, held));
    }

    [Fact]
    public void A_disposed_space_with_room_left_in_its_arena_does_not_hand_out_blocks()
    {
        // Before: the arena's metadata was freed at Dispose and the next allocation wrote into it.
        var memory = new PhysicalMemory(Small);
        memory.AllocateBlock(Zone.Normal, 0);
        memory.Dispose();
        for (int i = 0; i < 100; i++)
            Assert.Throws<ObjectDisposedException>(() => memory.AllocateBlock(Zone.Normal, 0));
    }


    [Fact]
    public void A_live_pool_over_a_disposed_space_throws_ObjectDisposedException_on_hit_miss_and_release()
    {
        var memory = new PhysicalMemory(Small);
        var pool = new PoolAllocator(memory, new PoolOptions { PoolWriteBack = true });
        var pooled = pool.AllocatePage(CachingMode.WriteCombined);
        var held = pool.AllocatePage(CachingMode.WriteCombined);
        pool.ReleasePage(pooled, CachingMode.WriteCombined); // the next WC allocation would be a hit
        memory.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.AllocatePage(CachingMode.WriteCombined)); // hit path
        Assert.Throws<ObjectDisposedException>(() => pool.AllocatePage(CachingMode.Uncached));      // miss path
        Assert.Throws<ObjectDisposedException>(() => pool.ReleasePage(held, CachingMode.WriteCombined));
        Assert.Throws<ObjectDisposedException>(() => pool.Release([held], CachingMode.WriteCombined));
    }

    [Fact]
    public void A_handle_of_a_disposed_space_is_foreign_to_every_later_space_even_after_300_cycles()
    {
        // Before: space ids were 8 bits; 254 cycles later an old handle named a live page of a new space.
        var first = new PhysicalMemory(Small);
        var old = first.AllocateBlock(Zone.Normal, 0);
        first.Dispose();
        for (int cycle = 0; cycle < 300; cycle++)
        {
            using var memory = new PhysicalMemory(Small);
            var mine = memory.AllocateBlock(Zone.Normal, 0);
            Assert.Equal(HandleError.Foreign, Assert.Throws<PageHandleException>(() => memory.GetSpan(old)).Error);
            Assert.Equal(HandleError.Foreign, Assert.Throws<PageHandleException>(() => memory.FreeBlock(old)).Error);
            memory.FreeBlock(mine);
        }
    }

    [Fact]
    public void The_first_block_of_every_space_is_a_real_handle_never_the_null_one()
    {
        // Found by the misuse generator: a space tag of 0 made arena 0, page 0, order 0, generation 0 read as null.
        for (int cycle = 0; cycle < 300; cycle++)
        {
            using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 2L << 20, NormalBytes = 0 });
            var first = memory.AllocateBlock(Zone.Dma32, 0);
            Assert.False(first.IsNull);
            Assert.Equal(first, memory.HandleOf(first.Value));
            memory.GetSpan(first)[0] = 1;
            memory.FreeBlock(first);
        }
    }

    [Fact]
    public void A_handle_rebuilt_from_its_raw_value_alone_is_refused_and_HandleOf_rebuilds_it()
    {
        using var memory = new PhysicalMemory(Small);
        var page = memory.AllocateBlock(Zone.Normal, 0);
        var bare = new PageHandle(page.Value);
        Assert.NotEqual(page, bare);
        Assert.Equal(HandleError.Foreign, Assert.Throws<PageHandleException>(() => memory.GetSpan(bare)).Error);
        var rebuilt = memory.HandleOf(page.Value);
        Assert.Equal(page, rebuilt);
        memory.FreeBlock(rebuilt);
        Assert.Equal(PageHandle.Null, memory.HandleOf(0));
    }

    [Fact]
    public void HandleOf_refuses_a_raw_value_made_by_another_space()
    {
        using var a = new PhysicalMemory(Small);
        using var b = new PhysicalMemory(Small);
        var theirs = b.AllocateBlock(Zone.Normal, 0);
        Assert.Equal(HandleError.Foreign, Assert.Throws<PageHandleException>(() => a.HandleOf(theirs.Value)).Error);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(255)]
    public void An_undefined_caching_mode_is_rejected_before_anything_changes(int mode)
    {
        // Before: (CachingMode)4 and 5 spilled into the order bits of the metadata word.
        using var memory = new PhysicalMemory(Small);
        var block = memory.AllocateBlock(Zone.Normal, 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => memory.SetCaching(block, (CachingMode)mode));
        Assert.Equal("mode", e.ParamName);
        Assert.Equal(CachingMode.WriteBack, memory.CachingOf(block));
        Assert.Equal(8192, memory.GetSpan(block).Length); // still order 1
        memory.FreeBlock(block);
        Assert.Equal(0, memory.UsedBytes(Zone.Normal));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(200)]
    public void An_undefined_zone_is_an_argument_error_not_an_index_error(int zone)
    {
        using var memory = new PhysicalMemory(Small);
        Assert.Equal("zone", Assert.Throws<ArgumentOutOfRangeException>(() => memory.AllocateBlock((Zone)zone, 0)).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.MappedBytes((Zone)zone));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.UsedBytes((Zone)zone));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.Capacity((Zone)zone));
        Assert.Equal(0, memory.MappedBytes(Zone.Normal) + memory.MappedBytes(Zone.Dma32));
    }

    [Fact]
    public void An_order_beyond_the_largest_is_an_argument_error()
    {
        using var memory = new PhysicalMemory(Small);
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.AllocateBlock(Zone.Normal, PhysicalMemory.MaxOrder + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.AllocateBlock(Zone.Normal, -1));
    }

    [Fact]
    public void Threads_changing_the_caching_of_the_same_pages_keep_the_pools_in_use_counters_exact()
    {
        // Before: two threads read the same "from" mode and both told the pool; counters ended at wc -18 / uc +18.
        using var memory = new PhysicalMemory(Small);
        using var pool = new PoolAllocator(memory);
        var pages = new PageHandle[2];
        for (int i = 0; i < pages.Length; i++) pages[i] = pool.AllocatePage(CachingMode.WriteBack);
        int threads = Math.Max(16, 8 * Environment.ProcessorCount), refused = 0;
        var unexpected = new List<Exception>();
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            start.SignalAndWait(TestContext.Current.CancellationToken);
            for (int k = 0; k < 2000; k++)
            {
                try
                {
                    memory.SetCaching(pages[rng.Next(pages.Length)], (CachingMode)rng.Next(3));
                }
                catch (PageHandleException e) when (e.Error == HandleError.WrongState)
                {
                    Interlocked.Increment(ref refused);
                }
                catch (Exception e)
                {
                    lock (unexpected) unexpected.Add(e);
                }
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        Assert.Empty(unexpected);

        foreach (var mode in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
            Assert.Equal(pages.Count(p => memory.CachingOf(p) == mode), pool.InUsePages(mode));
        foreach (var p in pages) pool.ReleasePage(p, memory.CachingOf(p));
        Assert.Equal(0, pool.InUsePages(CachingMode.WriteBack) + pool.InUsePages(CachingMode.WriteCombined) + pool.InUsePages(CachingMode.Uncached));
        pool.Audit();
    }

    [Fact]
    public void A_free_racing_a_caching_change_of_the_same_block_leaves_one_winner_and_no_leak()
    {
        using var memory = new PhysicalMemory(Small);
        int threads = Math.Max(4, 2 * Environment.ProcessorCount);
        var unexpected = new List<Exception>();
        for (int round = 0; round < 200; round++)
        {
            var block = memory.AllocateBlock(Zone.Normal, 2);
            int freed = 0;
            using var start = new Barrier(threads);
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                start.SignalAndWait(TestContext.Current.CancellationToken);
                try
                {
                    if (t % 2 == 0) { memory.FreeBlock(block); Interlocked.Increment(ref freed); }
                    else memory.SetCaching(block, (CachingMode)(1 + t % 2));
                }
                catch (PageHandleException e) when (e.Error is HandleError.WrongState or HandleError.Stale or HandleError.DoubleFree) { }
                catch (Exception e) { lock (unexpected) unexpected.Add(e); }
            })).ToList();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
            if (freed == 0) memory.FreeBlock(block);
            Assert.True(freed <= 1, $"freed {freed} times");
            Assert.Equal(0, memory.UsedBytes(Zone.Normal));
        }
        Assert.Empty(unexpected);
        // Every page went back write-back: a fresh block's cached alias is usable.
        var again = memory.AllocateBlock(Zone.Normal, 9);
        memory.GetAliasSpan(again)[0] = 1;
    }

    [Fact]
    public void Dispose_while_other_threads_allocate_and_free_never_faults()
    {
        int threads = Math.Max(4, 2 * Environment.ProcessorCount);
        var unexpected = new List<Exception>();
        for (int round = 0; round < 20; round++)
        {
            var memory = new PhysicalMemory(Small);
            using var start = new Barrier(threads + 1);
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                start.SignalAndWait(TestContext.Current.CancellationToken);
                try
                {
                    for (int k = 0; k < 1000; k++)
                    {
                        var h = memory.AllocateBlock(t % 2 == 0 ? Zone.Normal : Zone.Dma32, k % 3);
                        memory.GetSpan(h)[0] = 1;
                        memory.SetCaching(h, CachingMode.WriteCombined);
                        memory.Write(h, 0, [1, 2, 3]);
                        memory.FreeBlock(h);
                    }
                }
                catch (ObjectDisposedException) { }
                catch (ZoneExhaustedException) { }
                catch (Exception e) { lock (unexpected) unexpected.Add(e); }
            })).ToList();
            workers.ForEach(w => w.Start());
            start.SignalAndWait(TestContext.Current.CancellationToken);
            Thread.Sleep(round % 5);
            memory.Dispose();
            workers.ForEach(w => w.Join());
        }
        Assert.Empty(unexpected);
    }
}

// Counts of the process's descriptors and mappings are only exact while no other test allocates.
[Collection(nameof(RssTests))]
public sealed class MemoryDisposeLeakTests
{
    [Fact]
    public void Dispose_gives_back_the_memfds_and_their_mappings_and_a_second_Dispose_does_nothing()
    {
        int files = Leaks.OpenFiles(), mappings = Leaks.ArenaMappings();
        var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 2L << 20, NormalBytes = 4L << 20 });
        memory.AllocateBlock(Zone.Normal, 0);
        memory.AllocateBlock(Zone.Dma32, 0);
        Assert.Equal(files + 2, Leaks.OpenFiles());
        Assert.Equal(mappings + 4, Leaks.ArenaMappings()); // a view and an alias per arena
        memory.Dispose();
        memory.Dispose();
        Assert.Equal(files, Leaks.OpenFiles());
        Assert.Equal(mappings, Leaks.ArenaMappings());
    }
}
