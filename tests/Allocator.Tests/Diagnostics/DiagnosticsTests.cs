using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Diagnostics.Tracing;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

// Listeners are process-wide: run alone so other tests' events do not count here.
[Collection(nameof(RssTests))]
public sealed class DiagnosticsTests
{
    private sealed class Listener(EventKeywords keywords, EventLevel level) : EventListener
    {
        internal readonly ConcurrentBag<string> Names = new();

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == PagePoolEventSource.ProviderName) EnableEvents(source, level, keywords);
        }

        protected override void OnEventWritten(EventWrittenEventArgs e) => Names.Add(e.EventName ?? "");
    }

    [Fact]
    public void Misses_caching_changes_and_scans_are_reported_through_the_event_source()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 0, NormalBytes = 32L << 20 });
        using var pool = new PoolAllocator(memory);
        using var listener = new Listener(PagePoolEventSource.Keywords.Pool | PagePoolEventSource.Keywords.Caching | PagePoolEventSource.Keywords.Shrinker, EventLevel.Informational);
        var page = pool.AllocatePage(CachingMode.WriteCombined);
        pool.ReleasePage(page, CachingMode.WriteCombined);
        pool.Scan(1);
        Assert.Contains("PoolMiss", listener.Names);
        Assert.Contains("CachingTransition", listener.Names);
        Assert.Contains("ShrinkerScan", listener.Names);
    }

    [Fact]
    public void Hits_are_silent_unless_the_hit_path_keyword_is_enabled()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 0, NormalBytes = 32L << 20 });
        using var pool = new PoolAllocator(memory);
        pool.ReleasePage(pool.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);
        using (var quiet = new Listener(PagePoolEventSource.Keywords.Pool, EventLevel.Verbose))
        {
            pool.ReleasePage(pool.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);
            Assert.DoesNotContain("PoolHit", quiet.Names);
        }
        using var loud = new Listener(PagePoolEventSource.Keywords.HitPath, EventLevel.Verbose);
        pool.ReleasePage(pool.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);
        Assert.Contains("PoolHit", loud.Names);
    }

    [Fact]
    public void The_meter_reports_pooled_pages_by_caching_mode()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 0, NormalBytes = 32L << 20 });
        using var pool = new PoolAllocator(memory);
        var blocks = new PageHandle[8];
        int n = pool.Allocate(8, CachingMode.Uncached, Zone.Normal, blocks);
        pool.Release(blocks.AsSpan(0, n), CachingMode.Uncached);

        long uncachedPooled = 0;
        using var meters = new MeterListener();
        meters.InstrumentPublished = (instrument, l) => { if (instrument.Meter.Name == PagePoolMetrics.MeterName) l.EnableMeasurementEvents(instrument); };
        meters.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (instrument.Name != "pagepool.pages.pooled") return;
            foreach (var t in tags) if (t.Key == "caching" && (string?)t.Value == "uc") uncachedPooled += value;
        });
        meters.Start();
        meters.RecordObservableInstruments();
        Assert.True(uncachedPooled >= 8, $"uc pooled reported {uncachedPooled}");
    }
}
