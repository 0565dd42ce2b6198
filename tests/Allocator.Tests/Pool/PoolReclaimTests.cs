using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Shrinker;
using Xunit;

namespace PagePool.Allocator.Tests;

// The pool under the reclaim thread: registration, pressure, teardown.
[Collection(nameof(RssTests))]
public sealed class PoolReclaimTests
{
    private static PhysicalMemory NewMemory() => new(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 128L << 20 });

    [Fact]
    public void A_pool_given_a_registry_registers_its_shrinker_and_dispose_unregisters_it()
    {
        using var memory = NewMemory();
        var registry = new ShrinkerRegistry();
        var pool = new PoolAllocator(memory, null, registry);
        Assert.Equal(1, registry.Registered);
        pool.Dispose();
        Assert.Equal(0, registry.Registered);
    }

    [Fact]
    public void The_pool_shrinker_counts_nothing_distinctly_from_zero()
    {
        using var memory = NewMemory();
        using var pool = new PoolAllocator(memory);
        Assert.Equal(IShrinker.Empty, pool.Shrinker.Count());
        pool.ReleasePage(pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined);
        Assert.Equal(1, pool.Shrinker.Count());
    }

    [Fact]
    public void Critical_pressure_on_the_registry_empties_the_pool_and_gives_the_memory_back()
    {
        using var memory = NewMemory();
        var registry = new ShrinkerRegistry();
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 1L << 30 }, registry);
        var blocks = new PageHandle[4096];
        int n = pool.Allocate(4096, CachingMode.WriteCombined, Zone.Normal, blocks);
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
        Assert.Equal(4096, pool.Count());
        Assert.Equal(4096, registry.Shrink(priority: 0, MemoryPressure.Critical));
        Assert.Equal(0, pool.Count());
        Assert.Equal(0, memory.UsedBytes(Zone.Normal));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(17)]
    public void The_reclaim_thread_under_pressure_and_many_threads_loses_and_doubles_nothing(int seed)
    {
        const int Threads = 6, Ops = 1500;
        using var memory = NewMemory();
        var registry = new ShrinkerRegistry();
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 1L << 30, MagazinePages = 16 }, registry);
        using var reclaim = new ReclaimThread(registry, [], TimeSpan.FromMilliseconds(2));
        reclaim.Start();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            var rng = new Random(seed * 100 + t);
            var live = new List<(PageHandle[] Blocks, int Count, CachingMode Caching)>();
            for (int op = 0; op < Ops; op++)
            {
                if (op % 50 == 0) reclaim.Signal((MemoryPressure)rng.Next(1, 4));
                if (live.Count > 0 && (live.Count > 5 || rng.Next(2) == 0))
                {
                    int i = rng.Next(live.Count);
                    var (blocks, count, caching) = live[i];
                    live.RemoveAt(i);
                    foreach (var b in blocks.AsSpan(0, count))
                        if (memory.GetSpan(b)[0] != (byte)(t + 1)) failures.Enqueue($"{b} was overwritten");
                    pool.Release(blocks.AsSpan(0, count), caching);
                }
                else
                {
                    var caching = (CachingMode)rng.Next(3);
                    var blocks = new PageHandle[rng.Next(1, 40)];
                    int count = pool.Allocate(blocks.Length, caching, Zone.Normal, blocks);
                    foreach (var b in blocks.AsSpan(0, count))
                    {
                        var span = memory.GetSpan(b);
                        if (span.IndexOfAnyExcept((byte)0) >= 0) failures.Enqueue($"{b} not zero");
                        span[0] = (byte)(t + 1);
                    }
                    live.Add((blocks, count, caching));
                }
            }
            foreach (var (blocks, count, caching) in live) pool.Release(blocks.AsSpan(0, count), caching);
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        reclaim.Stop();

        Assert.Empty(failures);
        Assert.True(reclaim.Passes > 0 && reclaim.Freed > 0, $"{reclaim.Passes} passes freed {reclaim.Freed}");
        Assert.Equal(pool.Audit() * 4096, memory.UsedBytes(Zone.Normal));
        Assert.Equal(0, pool.Statistics().Sum(s => s.InUsePages));
    }

    private sealed class ShrinkerListener : EventListener
    {
        internal readonly ConcurrentQueue<string> Names = new();

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == PagePoolEventSource.ProviderName) EnableEvents(source, EventLevel.Informational, PagePoolEventSource.Keywords.Shrinker);
        }

        protected override void OnEventWritten(EventWrittenEventArgs e) => Names.Enqueue(e.EventName ?? "");
    }

    [Fact]
    public void Reclaim_passes_scans_pressure_and_failures_reach_the_event_stream()
    {
        using var memory = NewMemory();
        using var listener = new ShrinkerListener();
        var registry = new ShrinkerRegistry { Observer = ReclaimEventForwarder.Instance };
        using var pool = new PoolAllocator(memory, null, registry);
        pool.ReleasePage(pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined);
        registry.Register(new ThrowingShrinker());
        registry.Shrink(priority: 0);
        ReclaimEventForwarder.Instance.PressureChanged("test", MemoryPressure.Low);
        Assert.Contains("ReclaimPass", listener.Names);
        Assert.Contains("ShrinkerPassScanned", listener.Names);
        Assert.Contains("ShrinkerFailed", listener.Names);
        Assert.Contains("PressureChanged", listener.Names);
    }

    private sealed class ThrowingShrinker : IShrinker
    {
        public string Name => "throws";
        public long Count() => 1;
        public long Scan(long toScan) => throw new InvalidOperationException("scan failed");
    }
}
