// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using PagePool.Memory;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed class BufferAccountingTests
{
    [Fact]
    public void Populating_over_the_limit_swaps_out_the_least_recently_used_buffer_first()
    {
        using var f = new TtFixture(limitBytes: 3L << 20); // 768 pages
        using var a = f.New(256);
        using var b = f.New(256);
        using var c = f.New(256);
        a.Populate(); b.Populate(); c.Populate();
        ulong sumA = TtFixture.Fill(a, 1), sumB = TtFixture.Fill(b, 2);
        TtFixture.Fill(c, 3);
        a.Touch(); // b is now the coldest
        using var d = f.New(256);
        d.Populate();
        Assert.Equal(TtState.SwappedOut, b.State);
        Assert.Equal(TtState.Populated, a.State);
        Assert.Equal(TtState.Populated, c.State);
        Assert.Equal(768, f.Accounting.Pages);
        Assert.Equal(1, f.Accounting.Evictions);
        d.Dispose();
        b.Populate();
        Assert.Equal(sumB, TtFixture.Checksum(b));
        Assert.Equal(sumA, TtFixture.Checksum(a));
    }

    [Fact]
    public void When_nothing_can_be_swapped_populate_fails_typed_and_changes_nothing()
    {
        using var f = new TtFixture(limitBytes: 2L << 20); // 512 pages
        var dev = new TestDevice("gpu", ulong.MaxValue);
        using var a = f.New(384);
        a.Populate();
        a.Bind(dev); // bound: in use by the device, not a victim
        using var b = f.New(256);
        long inUse = f.PoolInUse;
        var e = Assert.Throws<TtOutOfMemoryException>(() => b.Populate());
        Assert.Equal(256, e.RequestedPages);
        Assert.Equal(512, e.LimitPages);
        Assert.Equal(TtState.Unpopulated, b.State);
        Assert.Equal(384, f.Accounting.Pages);
        Assert.Equal(inUse, f.PoolInUse);
        Assert.Throws<TtOutOfMemoryException>(() => f.New(1024).Populate()); // larger than the limit itself
        a.Unbind();
        b.Populate(); // now a can go
        Assert.Equal(TtState.SwappedOut, a.State);
    }

    [Fact]
    public void The_dma32_limit_swaps_only_dma32_buffers()
    {
        using var f = new TtFixture(limitBytes: 64L << 20, dma32LimitBytes: 1L << 20); // 256 DMA32 pages
        using var normal = f.New(128);
        using var low = f.New(192, zone: Zone.Dma32);
        normal.Populate();
        low.Populate();
        using var low2 = f.New(128, zone: Zone.Dma32);
        low2.Populate();
        Assert.Equal(TtState.Populated, normal.State); // older, but swapping it frees no DMA32 page
        Assert.Equal(TtState.SwappedOut, low.State);
        Assert.Equal(128, f.Accounting.Dma32Pages);
    }

    [Fact]
    public void A_zero_limit_refuses_every_populate()
    {
        using var f = new TtFixture(limitBytes: 0);
        using var t = f.New(1);
        Assert.Throws<TtOutOfMemoryException>(() => t.Populate());
        Assert.Equal(0, f.PoolInUse);
    }

    [Fact]
    public void Purgeable_buffers_are_purged_not_written_under_pressure()
    {
        using var f = new TtFixture(limitBytes: 1L << 20);
        using var scratch = f.New(256, flags: TtFlags.Purgeable);
        scratch.Populate();
        using var t = f.New(256);
        t.Populate();
        Assert.Equal(TtState.Unpopulated, scratch.State);
        Assert.Equal(0, f.Store.BytesWritten);
    }

    [Fact]
    public void As_a_shrinker_it_counts_idle_resident_pages_and_scan_swaps_the_coldest()
    {
        using var f = new TtFixture();
        var dev = new TestDevice("gpu", ulong.MaxValue);
        using var a = f.New(64);
        using var b = f.New(128);
        using var bound = f.New(32);
        a.Populate(); b.Populate(); bound.Populate();
        bound.Bind(dev);
        Assert.Equal(192, f.Accounting.Count());
        Assert.Equal(64, f.Accounting.Scan(1)); // the coldest buffer goes whole
        Assert.Equal(TtState.SwappedOut, a.State);
        Assert.Equal(128, f.Accounting.Count());
        Assert.Equal(128, f.Accounting.Scan(long.MaxValue));
        Assert.Equal(0, f.Accounting.Count());
        Assert.Equal(0, f.Accounting.Scan(10));
        Assert.Equal(TtState.Bound, bound.State);
    }

    [Fact]
    public void A_buffer_whose_lock_is_held_is_skipped_not_waited_for()
    {
        using var f = new TtFixture();
        using var a = f.New(64);
        using var b = f.New(64);
        a.Populate(); b.Populate();
        long freed;
        lock (a.Gate) freed = f.Accounting.Scan(1);
        Assert.Equal(64, freed);
        Assert.Equal(TtState.Populated, a.State);
        Assert.Equal(TtState.SwappedOut, b.State);
    }

    [Fact]
    public void Swap_round_trips_stay_bit_exact_while_threads_populate_over_the_limit_and_a_reclaimer_scans()
    {
        // 6 threads on 2 cores, 16 buffers each of 1..64 pages, a limit that holds about a third of them.
        using var f = new TtFixture(limitBytes: 2L << 20, restoreBatch: 64L << 10);
        const int Threads = 6, PerThread = 16;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        int stop = 0;
        var reclaimer = new Thread(() => { while (Volatile.Read(ref stop) == 0) { f.Accounting.Scan(32); Thread.Sleep(1); } });
        reclaimer.Start();
        var workers = Enumerable.Range(0, Threads).Select(w => new Thread(() =>
        {
            var rng = new Random(w + 1);
            var mine = new List<(PageArray T, byte[] Data)>();
            for (int i = 0; i < PerThread; i++)
            {
                var t = f.New(1 + rng.Next(64), (CachingMode)rng.Next(3));
                var data = TtFixture.Pattern(t.Bytes, (ulong)(w * 100 + i));
                using (t.Reserve())
                {
                    t.Populate();
                    t.Write(0, data);
                }
                mine.Add((t, data));
            }
            for (int round = 0; round < 40; round++)
            {
                var (t, data) = mine[rng.Next(mine.Count)];
                try
                {
                    using (t.Reserve())
                    {
                        if (t.State == TtState.SwappedOut) t.Populate();
                        var back = new byte[t.Bytes];
                        t.Read(0, back);
                        if (!back.AsSpan().SequenceEqual(data)) failures.Enqueue($"thread {w} buffer of {t.PageCount} pages differs");
                        if (rng.Next(3) == 0) t.SwapOut();
                    }
                }
                catch (TtOutOfMemoryException)
                {
                    // Every other resident buffer was busy in another thread's lock: legal under this much contention.
                }
            }
            foreach (var (t, _) in mine) t.Dispose();
        })).ToArray();
        foreach (var t in workers) t.Start();
        foreach (var t in workers) t.Join();
        Volatile.Write(ref stop, 1);
        reclaimer.Join();
        Assert.Empty(failures);
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.PoolInUse);
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.True(f.Accounting.BytesSwappedIn > 0, "the run must have swapped something back in");
    }
}

/// <summary>The buffers' LRU as a shrinker of the reclaim registry: pressure swaps out idle buffers, bit-exact.</summary>
public sealed class BufferReclaimTests
{
    [Fact]
    public void Critical_pressure_through_the_registry_swaps_out_idle_buffers_and_they_come_back_bit_exact()
    {
        using var f = new TtFixture();
        var registry = new PagePool.Shrinker.ShrinkerRegistry();
        registry.Register(f.Accounting);
        using var a = f.New(64, CachingMode.WriteCombined);
        using var b = f.New(32, CachingMode.WriteBack);
        a.Populate(TestContext.Current.CancellationToken);
        b.Populate(TestContext.Current.CancellationToken);
        ulong sa = TtFixture.Fill(a, 1), sb = TtFixture.Fill(b, 2);

        long freed = registry.Shrink(0, PagePool.Shrinker.MemoryPressure.Critical);

        Assert.True(freed >= 96, $"freed {freed}");
        Assert.Equal(TtState.SwappedOut, a.State);
        Assert.Equal(TtState.SwappedOut, b.State);
        Assert.Equal(0, f.Accounting.Pages);
        a.Populate(TestContext.Current.CancellationToken);
        b.Populate(TestContext.Current.CancellationToken);
        Assert.Equal(sa, TtFixture.Checksum(a));
        Assert.Equal(sb, TtFixture.Checksum(b));
        Assert.True(registry.Unregister(f.Accounting));
    }
}
