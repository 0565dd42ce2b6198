using System.Diagnostics.Metrics;
using System.Diagnostics.Tracing;
using System.Reflection;
using System.Text.RegularExpressions;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>The README's telemetry table is what the Meter publishes and what the EventSource defines, row for row.</summary>
public sealed partial class TelemetryTableTests
{
    private sealed record Row(string Name, string Type, string Unit, string Tags);

    [GeneratedRegex(@"^\| `([^`]+)` \|([^|]+)\|([^|]*)\|([^|]+)\|[^|]+\|$")]
    private static partial Regex TableRow();

    private static List<Row> ReadmeTable()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(dir!.FullName, "Allocator.sln"))) dir = dir.Parent;
        var rows = new List<Row>();
        foreach (var line in File.ReadLines(Path.Combine(dir.FullName, "README.md")))
            if (TableRow().Match(line) is { Success: true } m && (m.Groups[1].Value.StartsWith("pagepool.") || m.Groups[2].Value.Trim().StartsWith("event ")))
                rows.Add(new Row(m.Groups[1].Value, m.Groups[2].Value.Trim(), m.Groups[3].Value.Trim().Trim('`'), m.Groups[4].Value.Trim()));
        return rows;
    }

    [Fact]
    public void Every_instrument_the_meter_publishes_is_in_the_readme_table_with_its_type_unit_and_tags()
    {
        var table = ReadmeTable().Where(r => r.Name.StartsWith("pagepool.")).ToDictionary(r => r.Name);
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 8L << 20, NormalBytes = 32L << 20 });
        using var pool = new PoolAllocator(memory);
        var blocks = new PageHandle[4];
        int n = pool.Allocate(4, CachingMode.WriteCombined, Zone.Normal, blocks);
        pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);

        // A reclaim pass through the forwarder, so the reclaim instruments have something to report.
        var registry = new PagePool.Shrinker.ShrinkerRegistry { Observer = ReclaimEventForwarder.Instance };
        registry.Register(pool.Shrinker);
        ReclaimEventForwarder.Instance.PressureChanged("test", PagePool.Shrinker.MemoryPressure.Low);
        registry.Shrink(0, PagePool.Shrinker.MemoryPressure.Critical);
        registry.Unregister(pool.Shrinker);

        var published = new Dictionary<string, Instrument>();
        var tags = new Dictionary<string, HashSet<string>>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name != PagePoolMetrics.MeterName) return;
            published[instrument.Name] = instrument;
            l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, _, t, _) =>
        {
            var keys = tags.TryGetValue(instrument.Name, out var k) ? k : tags[instrument.Name] = new();
            foreach (var tag in t) keys.Add(tag.Key);
        });
        listener.SetMeasurementEventCallback<double>((instrument, _, _, _) => Assert.Fail($"{instrument.Name}: a ratio or other double instrument"));
        listener.Start();
        listener.RecordObservableInstruments();

        Assert.Equal(table.Keys.Order(), published.Keys.Order());
        foreach (var (name, instrument) in published)
        {
            var row = table[name];
            Assert.Equal(row.Type, instrument.GetType().Name.Split('`')[0]);
            Assert.Equal(row.Unit, instrument.Unit);
            Assert.Equal(row.Tags.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Order(),
                (tags.TryGetValue(name, out var seen) ? seen : []).Order());
            if (!name.StartsWith("pagepool.reclaim.", StringComparison.Ordinal) && !name.StartsWith("pagepool.pressure.", StringComparison.Ordinal))
                Assert.Contains("pool", tags[name]); // several pools are never summed silently
        }
    }

    [Fact]
    public void Every_event_the_event_source_defines_is_in_the_readme_table_with_its_id_and_keyword()
    {
        var table = ReadmeTable().Where(r => r.Type.StartsWith("event ")).ToDictionary(r => r.Name);
        var defined = typeof(PagePoolEventSource).GetMethods(BindingFlags.Public | BindingFlags.Instance)
            .Select(m => (m.Name, Event: m.GetCustomAttribute<EventAttribute>()))
            .Where(e => e.Event is not null)
            .ToDictionary(e => e.Name, e => e.Event!);
        Assert.Equal(table.Keys.Order(), defined.Keys.Order());
        foreach (var (name, e) in defined)
        {
            var row = table[name];
            Assert.Matches($@"^event {e.EventId}\b", row.Type);
            Assert.StartsWith($"`0x{(long)e.Keywords:x}`", row.Tags);
        }
    }

    [Fact]
    public void Two_pools_are_reported_under_two_pool_tags()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 0, NormalBytes = 32L << 20 });
        using var a = new PoolAllocator(memory);
        using var b = new PoolAllocator(memory);
        foreach (var pool in new[] { a, b })
        {
            var h = pool.AllocatePage(CachingMode.Uncached, Zone.Normal);
            pool.Release([h], CachingMode.Uncached);
        }
        var pools = new HashSet<string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) => { if (instrument.Name == "pagepool.pool.misses") l.EnableMeasurementEvents(instrument); };
        listener.SetMeasurementEventCallback<long>((_, value, t, _) =>
        {
            foreach (var tag in t) if (tag.Key == "pool" && value > 0) pools.Add((string)tag.Value!);
        });
        listener.Start();
        listener.RecordObservableInstruments();
        Assert.True(pools.Count >= 2, $"pools seen: {string.Join(", ", pools)}");
    }
}
