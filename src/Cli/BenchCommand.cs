using System.CommandLine;
using System.Globalization;
using PagePool.Cli.Bench;

namespace PagePool.Cli;

/// <summary>
/// pagepool bench: in-process measurements, each repeated (--repeat) and shown as the median with the spread of
/// the repetitions, printed as a table and optionally written as JSON (the flat object of medians plus every
/// sample, what the perf gate reads) and drawn as an SVG chart.
/// </summary>
internal static class BenchCommand
{
    /// <summary>The groups, in the order they run. A group adds its metrics to the shared context.</summary>
    internal static readonly (string Name, string About, Action<BenchContext> Run)[] Groups =
    [
        ("baseline", "kernel and CPU floors: mmap, memset, streaming clears", BaselineBench.Run),
        ("caching", "caching changes, single page versus batched", CachingBench.Run),
        ("peers", "mimalloc, jemalloc and NativeMemory: aligned 4 KiB, zeroed and not", PeerAllocators.Run),
        ("pool", "pool hits per caching mode, with and without the clear; 2 MiB populate", PoolBench.Run),
        ("scaling", "pool hits on two threads over one, and the machine's ceiling", PoolBench.RunScaling),
        ("policies", "a miss, no write-back pooling, and where pages are cleared", PoolBench.RunPolicies),
        ("pooled", "the write-back hit with 4 GiB pooled; seconds to fill", PoolBench.RunPooled),
        ("diagnosis", "what the hit pays: its synchronisation alone, and what two threads share", HitPathDiagnosis.Run),
        ("memorypool", "MemoryPool<byte> over the pool against MemoryPool.Shared and ArrayPool", MemoryPoolBench.Run),
        ("reclaim", "memory back under pressure, pooled pages reached from every CPU", ReclaimBench.Run),
        ("dma", "IOVA cache, IOMMU map/unmap and scaling, swiotlb round trip", DmaBench.Run),
        ("swap", "a 256 MiB buffer swapped to the file store and back, against memcpy and plain file I/O", SwapBench.Run),
    ];

    /// <summary>The most repetitions --repeat accepts: enough for any statistical test, a bound on run time.</summary>
    private const int MaxRepeat = 101;

    internal static Command Create()
    {
        var quick = new Option<bool>("--quick") { Description = "Fewer operations per repetition and smaller sizes (for CI)." };
        var only = new Option<string?>("--only")
        {
            Description = "Run these groups only (comma-separated): " + string.Join(", ", Groups.Select(g => g.Name)) + ".",
            HelpName = "GROUPS",
        };
        only.CompletionSources.Add(Groups.Select(g => g.Name).ToArray());
        only.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string?>();
            if (v is null) return;
            if (SplitGroups(v).Length == 0)
                r.AddError($"--only: names no group; give one or more of {string.Join(", ", Groups.Select(g => g.Name))}.");
            foreach (var name in SplitGroups(v))
                if (!Groups.Any(g => g.Name == name))
                    r.AddError($"--only: unknown group '{name}'; accepted: {string.Join(", ", Groups.Select(g => g.Name))}.");
        });
        only.CompletionSources.Add(Groups.Select(g => g.Name).ToArray());
        var repeat = new Option<int?>("--repeat")
        {
            Description = "Repetitions per metric (default 5 with --quick, 11 otherwise); the JSON keeps every one.",
            HelpName = "N",
            CustomParser = r => Arguments.Whole("--repeat", 1, MaxRepeat)(r),
        };
        var json = new Option<string?>("--json")
        {
            Description = "Also write the results as JSON to FILE ('-' for standard output; the table then goes to standard error).",
            HelpName = "FILE",
            CustomParser = r => Arguments.OutputPath(r, "--json", allowStdout: true),
        };
        var svg = new Option<string?>("--svg")
        {
            Description = "Also draw the results as an SVG chart to FILE.",
            HelpName = "FILE",
            CustomParser = r => Arguments.OutputPath(r, "--svg", allowStdout: false),
        };
        var cmd = new Command("bench", "Measure caching changes, the pool and their baselines; print a table.") { quick, only, repeat, json, svg };
        cmd.SetAction(r => Run(r.GetValue(quick), r.GetValue(only), r.GetValue(repeat), r.GetValue(json), r.GetValue(svg)));
        return cmd;
    }

    private static string[] SplitGroups(string value) => value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static int Run(bool quick, string? only, int? repeat, string? jsonPath, string? svgPath)
    {
        var slowdown = BenchSlowdown.Parse(Environment.GetEnvironmentVariable(BenchSlowdown.Variable));
        foreach (var (metric, factor) in slowdown.Factors)
            Console.Error.WriteLine($"bench: {BenchSlowdown.Variable} slows {metric} down {factor}x on purpose (its operation runs {factor} times per timed operation).");
        var ctx = new BenchContext(quick, repeat, slowdown);
        var chosen = only is null ? null : SplitGroups(only);
        foreach (var g in Groups)
        {
            if (chosen is not null && !chosen.Contains(g.Name)) continue;
            Console.Error.Write($"bench: {g.Name} ({g.About})...");
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            g.Run(ctx);
            Console.Error.WriteLine($" {System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s");
        }
        bool jsonToStdout = jsonPath == "-";
        Print(ctx, jsonToStdout ? Console.Error : Console.Out);
        if (jsonPath is not null)
        {
            using var json = OutputFile.Create(jsonPath, Console.Out);
            BenchResults.Write(ctx.Metrics, BenchMachine.Current, json.Stream);
            if (jsonToStdout) json.Stream.Write("\n"u8);
            json.Commit();
        }
        if (svgPath is not null)
        {
            using var svg = OutputFile.Create(svgPath, Console.Out);
            svg.Stream.Write(System.Text.Encoding.UTF8.GetBytes(BenchChart.Draw(ctx.Metrics, ctx.Reps)));
            svg.Commit();
        }
        var unapplied = slowdown.Unapplied.ToList();
        if (unapplied.Count > 0)
        {
            Console.Error.WriteLine($"pagepool: bench: {BenchSlowdown.Variable} named {string.Join(", ", unapplied)}, but no operation this run "
                + "timed was measured for it (a metric timed by a loop of its own or computed from others, misspelt, or in a group not run): "
                + "nothing was slowed for it.");
            return ExitCodes.BadArguments;
        }
        return ExitCodes.Ok;
    }

    private static void Print(BenchContext ctx, TextWriter output)
    {
        if (ctx.Metrics.Count == 0)
        {
            output.WriteLine("bench: no metric measured.");
            return;
        }
        int w = Math.Max(6, ctx.Metrics.Max(m => m.Name.Length));
        var spreads = ctx.Metrics.Select(m => $"{Format(m.Samples.Min)}..{Format(m.Samples.Max)}").ToArray();
        int sw = Math.Max(18, spreads.Max(s => s.Length));
        output.WriteLine($"{"metric".PadRight(w)}  {"median",10}  {"unit",-7}  {$"spread of {ctx.Reps}".PadRight(sw)}  what");
        for (int i = 0; i < ctx.Metrics.Count; i++)
        {
            var m = ctx.Metrics[i];
            output.WriteLine($"{m.Name.PadRight(w)}  {Format(m.Value),10}  {m.Unit,-7}  {spreads[i].PadRight(sw)}  {m.Description}");
        }
        foreach (var n in ctx.Notes) output.WriteLine($"note: {n}");
    }

    /// <summary>Four significant digits, never exponent notation: 0.9312, 41.37, 412.6, 4126.</summary>
    internal static string Format(double v)
    {
        double a = Math.Abs(v);
        string format = a >= 1000 ? "0" : a >= 100 ? "0.0" : a >= 10 ? "0.00" : "0.000";
        return v.ToString(format, CultureInfo.InvariantCulture);
    }
}
