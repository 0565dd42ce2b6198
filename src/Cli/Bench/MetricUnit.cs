namespace PagePool.Cli.Bench;

/// <summary>
/// The unit of a metric, read from its name: the last dotted part that names a unit (<c>pool.hit.wb.ns</c> and
/// <c>pool.hit.wb.ns.pooled_4g</c> are nanoseconds). A name with no unit part is a ratio of two measurements
/// (<c>pool.scaling.2t</c>), for which more is better; for every time unit less is better.
/// </summary>
internal static class MetricUnit
{
    private static readonly Dictionary<string, string> Units = new()
    {
        ["ns"] = "ns",
        ["us"] = "us",
        ["ms"] = "ms",
        ["s"] = "s",
        ["ns_per_page"] = "ns/page",
        ["us_per_page"] = "us/page",
        ["gbps"] = "GB/s",
        ["mbps"] = "MB/s",
        ["bytes"] = "bytes",
        ["pct"] = "%",
    };

    private static readonly HashSet<string> HigherIsBetterUnits = ["ratio", "GB/s", "MB/s"];

    internal const string Ratio = "ratio";

    internal static string Of(string metric)
    {
        var parts = metric.Split('.');
        for (int i = parts.Length - 1; i > 0; i--)
            if (Units.TryGetValue(parts[i], out var unit)) return unit;
        return Ratio;
    }

    /// <summary>Whether a larger value of this metric is an improvement (throughput, scaling) rather than a cost.</summary>
    internal static bool HigherIsBetter(string metric) => HigherIsBetterUnits.Contains(Of(metric));
}
