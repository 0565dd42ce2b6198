namespace PagePool.Cli.Bench;

/// <summary>
/// A deliberate slowdown, to prove the perf gate can fail: PAGEPOOL_BENCH_SLOWDOWN=pool.hit.wb.ns:3 runs the
/// operation measured for pool.hit.wb.ns three times per timed operation. Read once when bench starts and
/// applied in this harness only (the operation is wrapped in a delegate here), so the library's hot path has
/// no check for it and costs the same with or without it.
/// </summary>
internal sealed class BenchSlowdown
{
    internal const string Variable = "PAGEPOOL_BENCH_SLOWDOWN";

    private readonly Dictionary<string, int> _factors;

    private BenchSlowdown(Dictionary<string, int> factors) => _factors = factors;

    /// <summary>No slowdown at all.</summary>
    internal static BenchSlowdown None { get; } = new(new Dictionary<string, int>());

    /// <summary>
    /// Parse METRIC:FACTOR[,METRIC:FACTOR...] (a whole factor from 1 to 100). A value that does not parse stops
    /// bench with a usage error rather than measuring something other than what was asked.
    /// </summary>
    internal static BenchSlowdown Parse(string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) return None;
        var factors = new Dictionary<string, int>();
        foreach (var item in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int colon = item.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(item.AsSpan(colon + 1), out int factor) || factor < 1 || factor > 100)
                throw new UsageException($"{Variable}: '{item}' is not METRIC:FACTOR with a whole factor from 1 to 100 (e.g. pool.hit.wb.ns:3).");
            factors[item[..colon]] = factor;
        }
        return new BenchSlowdown(factors);
    }

    /// <summary>The factor asked for <paramref name="metric"/>, 1 when none.</summary>
    internal int FactorOf(string metric) => _factors.GetValueOrDefault(metric, 1);

    /// <summary>The metrics a slowdown was asked for (bench says so on standard error, so no one is misled).</summary>
    internal IEnumerable<KeyValuePair<string, int>> Factors => _factors;

    private readonly HashSet<string> _applied = new();

    /// <summary>
    /// The metrics asked for that no operation of the run was wrapped for (a metric timed by a loop of its own, computed
    /// from others, misspelt, or in a group not run): nothing was slowed for them, which bench reports as an error.
    /// </summary>
    internal IEnumerable<string> Unapplied => _factors.Keys.Where(m => !_applied.Contains(m));

    /// <summary><paramref name="op"/> itself, or a delegate running it FACTOR times when a slowdown is asked for <paramref name="metric"/>.</summary>
    internal Action Wrap(string metric, Action op)
    {
        if (!_factors.TryGetValue(metric, out int factor)) return op;
        lock (_applied) _applied.Add(metric);
        if (factor == 1) return op;
        return () =>
        {
            for (int i = 0; i < factor; i++) op();
        };
    }
}
