using System.Globalization;

namespace PagePool.Cli.Trace;

/// <summary>Prints what a trace holds: event counts by provider and name, and each metric's values over time.</summary>
internal static class TraceSummary
{
    private const string MetricsProvider = "System.Diagnostics.Metrics";

    internal static void Print(List<NettraceEvent> events, TextWriter o)
    {
        o.WriteLine($"{events.Count:N0} events");
        o.WriteLine();
        o.WriteLine($"{"provider",-28} {"event",-28} {"count",10}");
        foreach (var g in events.Where(e => e.Metadata.Provider != MetricsProvider)
                     .GroupBy(e => (e.Metadata.Provider, e.Metadata.Name))
                     .OrderBy(g => g.Key.Provider == Diagnostics.PagePoolEventSource.ProviderName ? 0 : 1)
                     .ThenBy(g => g.Key.Provider, StringComparer.Ordinal).ThenByDescending(g => g.Count()))
            o.WriteLine($"{Clip(g.Key.Provider, 28),-28} {Clip(g.Key.Name, 28),-28} {g.Count(),10:N0}");

        var series = MetricSeries(events);
        if (series.Count == 0) return;
        o.WriteLine();
        o.WriteLine("metrics over time (seconds from the start of the trace: value)");
        foreach (var (name, points) in series.OrderBy(s => s.Key, StringComparer.Ordinal))
        {
            var shown = points.Count <= 8 ? points : Enumerable.Range(0, 8).Select(i => points[i * (points.Count - 1) / 7]).ToList();
            o.WriteLine($"  {name}");
            o.WriteLine("    " + string.Join("  ", shown.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Seconds:0.0}s: {Format(p.Value)}"))));
        }
    }

    /// <summary>Values of every PagePool instrument (with its tags), from the Meter events of the trace.</summary>
    internal static Dictionary<string, List<(double Seconds, double Value)>> MetricSeries(List<NettraceEvent> events)
    {
        var series = new Dictionary<string, List<(double, double)>>();
        foreach (var e in events)
        {
            if (e.Metadata.Provider != MetricsProvider || !e.Metadata.Name.EndsWith("Published", StringComparison.Ordinal)) continue;
            if (e.Field("meterName") as string != Diagnostics.PagePoolMetrics.MeterName) continue;
            string instrument = e.Field("instrumentName") as string ?? "?";
            string tags = e.Field("tags") as string ?? "";
            object? raw = e.Field("lastValue") ?? e.Field("value") ?? e.Field("rate");
            double value = raw switch
            {
                double d => d,
                string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) => v,
                _ => double.NaN,
            };
            if (double.IsNaN(value)) continue;
            string key = tags.Length == 0 ? instrument : $"{instrument}{{{tags}}}";
            if (!series.TryGetValue(key, out var list)) series[key] = list = new();
            list.Add((e.Seconds, value));
        }
        return series;
    }

    private static string Format(double v) => Math.Abs(v) >= 1e6 ? v.ToString("0.###e0", CultureInfo.InvariantCulture) : v.ToString("0.###", CultureInfo.InvariantCulture);

    private static string Clip(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "~";
}
