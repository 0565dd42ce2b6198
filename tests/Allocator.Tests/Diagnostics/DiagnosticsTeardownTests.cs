using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Diagnostics.Tracing;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

// Listeners are process-wide: with the other event tests, alone.
[Collection(nameof(RssTests))]
public sealed class DiagnosticsTeardownTests
{
    private sealed class EverythingListener : EventListener
    {
        internal long Events;
        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == PagePoolEventSource.ProviderName) EnableEvents(source, EventLevel.Verbose, EventKeywords.All);
        }
        protected override void OnEventWritten(EventWrittenEventArgs e) => Interlocked.Increment(ref Events);
    }

    [Fact]
    public void Events_and_meters_collected_while_pools_are_created_and_disposed_with_pages_held_never_fail_and_forget_disposed_pools()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 16L << 20, NormalBytes = 64L << 20 });
        using var events = new EverythingListener();
        var seenPools = new ConcurrentDictionary<string, bool>();
        using var meters = new MeterListener();
        meters.InstrumentPublished = (instrument, l) => { if (instrument.Meter.Name == PagePoolMetrics.MeterName) l.EnableMeasurementEvents(instrument); };
        meters.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            foreach (var t in tags) if (t.Key == "pool" && t.Value is string name) seenPools[name] = true;
        });
        meters.Start();
        var errors = new ConcurrentQueue<Exception>();
        int stop = 0;
        var collector = new Thread(() =>
        {
            try { while (Volatile.Read(ref stop) == 0) meters.RecordObservableInstruments(); }
            catch (Exception e) { errors.Enqueue(e); }
        });
        collector.Start();
        int threads = Math.Max(4, 2 * Environment.ProcessorCount);
        var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            try
            {
                var rng = new Random(i);
                for (int round = 0; round < 30; round++)
                {
                    var caching = (CachingMode)rng.Next(3);
                    var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = rng.Next(2) == 0 ? 0 : 1L << 30 });
                    var held = new List<PageHandle>();
                    for (int k = 0; k < 32; k++) held.Add(pool.AllocatePage(caching));
                    foreach (var h in held.Take(16)) pool.ReleasePage(h, caching);
                    pool.Scan(4);
                    pool.Dispose(); // 16 pages still held: reported, re-owned to the memory space
                    foreach (var h in held.Skip(16)) pool.ReleasePage(h, caching);
                }
            }
            catch (Exception e) { errors.Enqueue(e); }
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        Volatile.Write(ref stop, 1);
        collector.Join();
        Assert.Empty(errors);
        Assert.True(Volatile.Read(ref events.Events) > 0);
        Assert.Equal(0, memory.UsedBytes(Zone.Normal) + memory.UsedBytes(Zone.Dma32));

        var during = seenPools.Keys.ToHashSet();
        Assert.NotEmpty(during);
        seenPools.Clear();
        meters.RecordObservableInstruments();
        Assert.DoesNotContain(seenPools.Keys, during.Contains); // every pool of this test was disposed: none is reported any more
    }
}
