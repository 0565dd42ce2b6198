using System.Globalization;
using System.Text.Json;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Cli.Stress;

/// <summary>
/// The end of a stress run, printed for people and written as JSON for programs. The JSON has one layout for every
/// scenario (<see cref="StressRunner.SchemaVersion"/>): every operation is present (zero when a scenario does not
/// use it), and the settings the run used are recorded beside the results.
/// </summary>
internal sealed class StressSummary
{
    private readonly StressSettings _s;
    private readonly StressWorker[] _workers;
    private readonly IReadOnlyList<PoolTypeStatistics> _stats;
    private readonly TimeSpan _elapsed;
    private readonly long _ops;
    private readonly List<string> _invariants, _exhausted;
    private readonly LatencyHistogram[] _merged;
    private readonly ulong _hash;
    private readonly long _hits, _misses;
    private readonly long _peakRss = PeakRss();

    internal long VerifyFailures { get; }

    /// <summary>Under --reclaim: the reclaim thread's passes, the pages they freed, and what each shrinker freed.</summary>
    internal (long Passes, long Freed, ReclaimTotals Totals)? Reclaim { get; init; }

    internal StressSummary(StressSettings s, StressWorker[] workers, IReadOnlyList<PoolTypeStatistics> stats,
        TimeSpan elapsed, long ops, List<string> invariants, List<string> exhausted)
    {
        (_s, _workers, _stats, _elapsed, _ops, _invariants, _exhausted) = (s, workers, stats, elapsed, ops, invariants, exhausted);
        _merged = new LatencyHistogram[StressOps.Count];
        for (int k = 0; k < _merged.Length; k++)
        {
            _merged[k] = new LatencyHistogram();
            foreach (var w in workers) _merged[k].Merge(w.Latency[k]);
        }
        VerifyFailures = workers.Sum(w => w.VerifyFailures);
        _hash = workers.Aggregate(0xCBF29CE484222325UL, (h, w) => (h ^ w.SequenceHash) * 0x100000001B3UL);
        _hits = stats.Sum(x => x.Hits);
        _misses = stats.Sum(x => x.Misses);
    }

    private double Seconds => Math.Max(1e-9, _elapsed.TotalSeconds);

    // VmHWM: the kernel's own record of this process's peak resident set.
    private static long PeakRss()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        return 0;
    }

    private static string Plural(long n, string one, string many) => string.Create(CultureInfo.InvariantCulture, $"{n:N0} {(n == 1 ? one : many)}");

    private long Returned => _stats.Sum(x => x.ReturnedPages);

    internal void Print(TextWriter o)
    {
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine();
        o.WriteLine(string.Create(inv, $"scenario {_s.Scenario.Name}, {_s.Threads} threads, {_elapsed.TotalSeconds:0.00} s, {Plural(_ops, "operation", "operations")} ({_ops / Seconds:N0}/s), sequence {_hash:x16}"));
        o.WriteLine();
        o.WriteLine($"{"operation",-14} {"count",13} {"per s",12} {"p50",10} {"p99",10} {"max",10}");
        foreach (var op in StressOps.All)
        {
            var h = _merged[(int)op];
            if (h.Count == 0) continue;
            o.WriteLine(string.Create(inv, $"{StressOps.Key(op),-14} {h.Count,13:N0} {h.Count / Seconds,12:N0} {Ns(h.Percentile(0.50)),10} {Ns(h.Percentile(0.99)),10} {Ns(h.Max),10}"));
        }
        o.WriteLine("(percentiles: at most 3.2% above the true value)");
        o.WriteLine();
        double ratio = _hits + _misses == 0 ? 0 : 100.0 * _hits / (_hits + _misses);
        o.WriteLine(string.Create(inv, $"pool hits             {ratio:0.0}% ({Plural(_hits, "hit", "hits")}, {Plural(_misses, "miss", "misses")})"));
        o.WriteLine($"caching transitions   {Plural(_stats.Sum(x => x.TransitionPages), "page", "pages")}");
        o.WriteLine($"shrinker scans freed  {Plural(_workers.Sum(w => w.ScannedPages), "page", "pages")}");
        o.WriteLine($"returned to system    {Plural(Returned, "page", "pages")} ({Size.Format(Returned * PhysicalMemory.PageSize)}; limit trims and scans)");
        o.WriteLine($"zone exhausted        {Plural(_workers.Sum(w => w.ZoneExhausted), "allocation", "allocations")}");
        o.WriteLine($"peak rss              {Size.Format(_peakRss)}");
        foreach (var (_, text, _) in _s.Scenario.Report()) if (text.Length > 0) o.WriteLine(text);
        if (Reclaim is var (passes, freed, totals))
            o.WriteLine($"reclaim passes        {passes:N0} freed {Plural(freed, "page", "pages")}{string.Concat(totals.Freed.Select(x => $", {x.Shrinker} {x.Freed:N0}"))}; highest pressure {totals.Highest}");
        string checks = _s.Scenario is DmaScenario ? "every byte (dma always checks every byte)" : _s.Verify ? "every byte" : "first word of every block";
        o.WriteLine($"verification          {checks}: {Plural(VerifyFailures, "failure", "failures")}");
        foreach (var f in _workers.SelectMany(w => w.Failures).Take(8)) o.WriteLine($"  {f}");
        o.WriteLine($"invariants            {(_invariants.Count == 0 ? "ok: every page accounted for exactly once" : "BROKEN")}");
        foreach (var i in _invariants) o.WriteLine($"  {i}");
        if (_exhausted.Count > 0) o.WriteLine($"out of resources      {_exhausted[0]}");
    }

    private static string Ns(long ns) => ns switch
    {
        >= 1_000_000_000 => string.Create(CultureInfo.InvariantCulture, $"{ns / 1e9:0.00} s"),
        >= 1_000_000 => string.Create(CultureInfo.InvariantCulture, $"{ns / 1e6:0.0} ms"),
        >= 1_000 => string.Create(CultureInfo.InvariantCulture, $"{ns / 1e3:0.0} us"),
        _ => $"{ns} ns",
    };

    internal void WriteJson(Stream stream)
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteNumber("schema_version", StressRunner.SchemaVersion);

        w.WriteStartObject("settings");
        w.WriteString("scenario", _s.Scenario.Name);
        w.WriteNumber("threads", _s.Threads);
        if (_s.Duration is { } d) w.WriteNumber("duration_s", d.TotalSeconds); else w.WriteNull("duration_s");
        if (_s.Operations is { } n) w.WriteNumber("operations", n); else w.WriteNull("operations");
        w.WriteNumber("working_set_bytes", _s.WorkingSetBytes);
        w.WriteNumber("pool_limit_bytes", _s.PoolLimitBytes);
        w.WriteString("caching_mix", _s.CachingMix.ToString());
        w.WriteString("order_mix", _s.OrderMix.ToString());
        w.WriteBoolean("verify", _s.Verify);
        w.WriteNumber("seed", _s.Seed);
        w.WriteBoolean("reclaim", _s.Reclaim);
        w.WriteBoolean("inject_corruption", _s.InjectCorruption);
        // One schema for every scenario: a setting the scenario does not use is null.
        bool dma = _s.Scenario is DmaScenario, swap = _s.Scenario is SwapScenario or MixedScenario;
        if (dma) w.WriteString("ops_kind", _s.Dma.OpsKind.ToString().ToLowerInvariant()); else w.WriteNull("ops_kind");
        if (dma) w.WriteNumber("devices", _s.Dma.Devices); else w.WriteNull("devices");
        if (dma) w.WriteNumber("mask_bits", _s.Dma.MaskBits); else w.WriteNull("mask_bits");
        if (dma) w.WriteBoolean("deferred_flush", _s.Dma.DeferredFlush); else w.WriteNull("deferred_flush");
        if (swap) w.WriteString("swap_store", _s.SwapStore); else w.WriteNull("swap_store");
        if (swap && _s.BufferLimitBytes is { } limit) w.WriteNumber("buffer_limit_bytes", limit); else w.WriteNull("buffer_limit_bytes");
        string? inject = _s.Scenario is DmaScenario ? DmaInjections.Name(_s.Dma.Inject) : _s.Inject;
        if (inject is not null) w.WriteString("inject", inject); else w.WriteNull("inject");
        w.WriteEndObject();

        w.WriteString("sequence_hash", _hash.ToString("x16", CultureInfo.InvariantCulture));
        w.WriteNumber("elapsed_s", Math.Round(_elapsed.TotalSeconds, 3));
        w.WriteNumber("operations", _ops);
        w.WriteNumber("ops_per_s", Math.Round(_ops / Seconds, 1));

        w.WriteString("latency_resolution", LatencyHistogram.Resolution);
        w.WriteStartObject("ops");
        foreach (var op in StressOps.All)
        {
            var h = _merged[(int)op];
            w.WriteStartObject(StressOps.Key(op));
            w.WriteNumber("count", h.Count);
            w.WriteNumber("p50_ns", h.Percentile(0.50));
            w.WriteNumber("p99_ns", h.Percentile(0.99));
            w.WriteNumber("p999_ns", h.Percentile(0.999));
            w.WriteNumber("max_ns", h.Max);
            w.WriteEndObject();
        }
        w.WriteEndObject();

        w.WriteStartObject("pool");
        w.WriteNumber("hits", _hits);
        w.WriteNumber("misses", _misses);
        w.WriteNumber("transition_pages", _stats.Sum(x => x.TransitionPages));
        w.WriteNumber("returned_pages", Returned);
        w.WriteNumber("shrinker_scan_freed_pages", _workers.Sum(x => x.ScannedPages));
        w.WriteEndObject();

        // What the scenario itself measured (swap bytes and rates, DMA work): an object in every scenario, empty when none.
        w.WriteStartObject("scenario");
        foreach (var (name, _, value) in _s.Scenario.Report()) w.WriteNumber(name, value);
        w.WriteEndObject();

        // Under --reclaim: what the reclaim thread did (null without it); freed_pages per shrinker by name.
        if (Reclaim is var (p, f, t))
        {
            w.WriteStartObject("reclaim");
            w.WriteNumber("passes", p);
            w.WriteNumber("freed_pages", f);
            w.WriteString("highest_pressure", t.Highest.ToString().ToLowerInvariant());
            w.WriteStartObject("shrinkers");
            foreach (var (name, freed) in t.Freed) w.WriteNumber(name, freed);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        else w.WriteNull("reclaim");

        w.WriteNumber("zone_exhausted", _workers.Sum(x => x.ZoneExhausted));
        w.WriteNumber("peak_rss_bytes", _peakRss);
        w.WriteNumber("verify_failures", VerifyFailures);
        w.WriteNumber("invariant_violations", _invariants.Count);
        w.WriteNumber("resource_exhausted", _exhausted.Count);
        w.WriteEndObject();
    }
}
