using System.Globalization;

namespace PagePool.Cli.Trace;

/// <summary>
/// What a trace holds: event counts by provider and name, and each PagePool metric's values over time. Built one
/// event at a time as the reader streams the file, in bounded memory: counts are per event kind (which the reader
/// caps), at most <see cref="MaxSeries"/> metric series are kept, and each keeps at most
/// <see cref="MaxPointsPerSeries"/> evenly spaced points of however many the trace has.
/// </summary>
internal sealed class TraceSummary
{
    /// <summary>Metric series kept; further instruments or tag sets are counted as dropped.</summary>
    internal const int MaxSeries = 1024;
    /// <summary>Points kept per series: every other one is dropped, and the stride doubled, when a series fills.</summary>
    internal const int MaxPointsPerSeries = 4096;
    private const int MaxKeyChars = 256;
    private const string MetricsProvider = "System.Diagnostics.Metrics";

    private readonly Dictionary<(string Provider, string Name), long> _counts = new();
    private readonly Dictionary<string, Series> _series = new(StringComparer.Ordinal);
    private long _events, _droppedSeries;

    private sealed class Series
    {
        internal readonly List<(double Seconds, double Value)> Points = new();
        internal long Seen;
        internal int Stride = 1;

        internal void Add(double seconds, double value)
        {
            if (Seen++ % Stride != 0) return;
            Points.Add((seconds, value));
            if (Points.Count < MaxPointsPerSeries) return;
            for (int i = 0; i < Points.Count / 2; i++) Points[i] = Points[2 * i];
            Points.RemoveRange(Points.Count / 2, Points.Count - Points.Count / 2);
            Stride *= 2;
        }
    }

    /// <summary>Stream a .nettrace file into a summary.</summary>
    /// <exception cref="NotANettraceException">The file is not a NetTrace stream.</exception>
    /// <exception cref="DamagedNettraceException">The trace is cut short or corrupt.</exception>
    internal static TraceSummary Of(string path)
    {
        var summary = new TraceSummary();
        NettraceReader.Read(path, summary.Add);
        return summary;
    }

    /// <summary>Events seen.</summary>
    internal long Events => _events;

    /// <summary>Count one event, and keep its value when it is a PagePool metric.</summary>
    internal void Add(NettraceEvent e)
    {
        _events++;
        var key = (e.Metadata.Provider, e.Metadata.Name);
        _counts[key] = _counts.GetValueOrDefault(key) + 1;
        if (e.Metadata.Provider != MetricsProvider || !e.Metadata.Name.EndsWith("Published", StringComparison.Ordinal)) return;
        if (e.Field("meterName") as string != Diagnostics.PagePoolMetrics.MeterName) return;
        string instrument = e.Field("instrumentName") as string ?? "?";
        string tags = e.Field("tags") as string ?? "";
        object? raw = e.Field("lastValue") ?? e.Field("value") ?? e.Field("rate");
        double value = raw switch
        {
            double d => d,
            string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) => v,
            _ => double.NaN,
        };
        if (double.IsNaN(value)) return;
        string name = tags.Length == 0 ? instrument : $"{instrument}{{{tags}}}";
        if (name.Length > MaxKeyChars) name = name[..MaxKeyChars];
        if (!_series.TryGetValue(name, out var series))
        {
            if (_series.Count >= MaxSeries) { _droppedSeries++; return; }
            _series[name] = series = new Series();
        }
        series.Add(e.Seconds, value);
    }

    /// <summary>Values of every PagePool instrument (with its tags), in time order.</summary>
    internal IReadOnlyDictionary<string, List<(double Seconds, double Value)>> MetricSeries
        => _series.ToDictionary(s => s.Key, s => s.Value.Points, StringComparer.Ordinal);

    /// <summary>Print the counts, then each metric's values at up to eight evenly spaced times.</summary>
    internal void Print(TextWriter o)
    {
        o.WriteLine($"{_events:N0} events");
        o.WriteLine();
        o.WriteLine($"{"provider",-28} {"event",-28} {"count",10}");
        foreach (var (key, count) in _counts.Where(c => c.Key.Provider != MetricsProvider)
                     .OrderBy(c => c.Key.Provider == Diagnostics.PagePoolEventSource.ProviderName ? 0 : 1)
                     .ThenBy(c => c.Key.Provider, StringComparer.Ordinal).ThenByDescending(c => c.Value))
            o.WriteLine($"{Clip(key.Provider, 28),-28} {Clip(key.Name, 28),-28} {count,10:N0}");

        if (_series.Count == 0) return;
        o.WriteLine();
        o.WriteLine("metrics over time (seconds from the start of the trace: value)");
        foreach (var (name, series) in _series.OrderBy(s => s.Key, StringComparer.Ordinal))
        {
            var points = series.Points;
            var shown = points.Count <= 8 ? points : Enumerable.Range(0, 8).Select(i => points[i * (points.Count - 1) / 7]).ToList();
            o.WriteLine($"  {name}");
            o.WriteLine("    " + string.Join("  ", shown.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Seconds:0.0}s: {Format(p.Value)}"))));
        }
        if (_droppedSeries != 0)
            o.WriteLine($"  ({_droppedSeries:N0} values of further series not shown: more than {MaxSeries} series)");
    }

    // Counts people read: 1.93 G, 241.6 M, 12,345, 0.5 (the instruments count pages and blocks; no exponent notation).
    internal static string Format(double v) => Math.Abs(v) switch
    {
        >= 1e9 => string.Create(CultureInfo.InvariantCulture, $"{v / 1e9:0.##} G"),
        >= 1e6 => string.Create(CultureInfo.InvariantCulture, $"{v / 1e6:0.##} M"),
        >= 1e4 => v.ToString("N0", CultureInfo.InvariantCulture),
        _ => v.ToString("0.###", CultureInfo.InvariantCulture),
    };

    private static string Clip(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "~";
}
