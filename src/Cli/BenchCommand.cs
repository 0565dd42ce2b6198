using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PagePool.Cli.Bench;

namespace PagePool.Cli;

/// <summary>
/// pagepool bench: in-process measurements, each the median of several repetitions in one run, printed as a
/// table and optionally written as a flat JSON object of metric name to number (what the CI gate reads).
/// </summary>
internal static class BenchCommand
{
    /// <summary>The groups, in the order they run. A group adds its metrics to the shared context.</summary>
    internal static readonly (string Name, string About, Action<BenchContext> Run)[] Groups =
    [
        ("baseline", "kernel and CPU floors: mmap, memset", BaselineBench.Run),
        ("caching", "caching changes, single page versus batched", CachingBench.Run),
        ("peers", "mimalloc, jemalloc and NativeMemory: zeroed aligned 4 KiB", PeerAllocators.Run),
        ("pool", "pool hit, miss, populate, scaling and policies", PoolBench.Run),
        ("memorypool", "MemoryPool<byte> over the pool against MemoryPool.Shared and ArrayPool", MemoryPoolBench.Run),
        ("reclaim", "memory back under pressure, pooled pages reached from every CPU", ReclaimBench.Run),
        ("dma", "IOVA cache, IOMMU map/unmap and scaling, swiotlb round trip", DmaBench.Run),
        ("swap", "a 256 MiB buffer swapped to the file store and back, against memcpy and plain file I/O", SwapBench.Run),
    ];

    internal static Command Create()
    {
        var quick = new Option<bool>("--quick") { Description = "Fewer repetitions and smaller sizes (for CI)." };
        var only = new Option<string?>("--only")
        {
            Description = "Run one group: " + string.Join(", ", Groups.Select(g => g.Name)) + ".",
            HelpName = "GROUP",
        };
        only.CompletionSources.Add(Groups.Select(g => g.Name).ToArray());
        only.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string?>();
            if (v is not null && !Groups.Any(g => g.Name == v))
                r.AddError($"--only: unknown group '{v}'; accepted: {string.Join(", ", Groups.Select(g => g.Name))}.");
        });
        var json = new Option<string?>("--json") { Description = "Also write the metrics as a flat JSON object to FILE.", HelpName = "FILE" };
        var cmd = new Command("bench", "Measure caching changes, the pool and their baselines; print a table.") { quick, only, json };
        cmd.SetAction(r => Run(r.GetValue(quick), r.GetValue(only), r.GetValue(json)));
        return cmd;
    }

    private static int Run(bool quick, string? only, string? jsonPath)
    {
        var ctx = new BenchContext(quick);
        foreach (var g in Groups)
        {
            if (only is not null && g.Name != only) continue;
            Console.Error.WriteLine($"bench: {g.Name} ({g.About})...");
            g.Run(ctx);
        }
        Print(ctx);
        if (jsonPath is not null) WriteJson(ctx, jsonPath);
        return ExitCodes.Ok;
    }

    private static void Print(BenchContext ctx)
    {
        int w = Math.Max(6, ctx.Metrics.Max(m => m.Name.Length));
        Console.WriteLine($"{"metric".PadRight(w)}  {"value",12}  what");
        foreach (var m in ctx.Metrics)
            Console.WriteLine($"{m.Name.PadRight(w)}  {m.Value.ToString("0.###", CultureInfo.InvariantCulture),12}  {m.Description}");
        foreach (var n in ctx.Notes) Console.WriteLine($"note: {n}");
    }

    internal static void WriteJson(BenchContext ctx, string path)
    {
        using var stream = File.Create(path);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        foreach (var m in ctx.Metrics) w.WriteNumber(m.Name, Math.Round(m.Value, 3));
        w.WriteEndObject();
    }
}
