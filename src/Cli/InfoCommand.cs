using System.CommandLine;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using PagePool.Shrinker;

namespace PagePool.Cli;

/// <summary>pagepool info: the machine facts that decide how PagePool behaves and performs.</summary>
internal static class InfoCommand
{
    internal static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of a table." };
        var cmd = new Command("info", "Show page size, flush instructions, THP mode, PSI, cgroup limit and memory totals.") { json };
        cmd.SetAction(r => Run(r.GetValue(json)));
        return cmd;
    }

    private static int Run(bool asJson)
    {
        var rows = Collect();
        if (asJson)
        {
            using var w = new Utf8JsonWriter(Console.OpenStandardOutput(), new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            foreach (var (key, value) in rows)
            {
                switch (value)
                {
                    case null: w.WriteNull(key); break;
                    case long l: w.WriteNumber(key, l); break;
                    case int i: w.WriteNumber(key, i); break;
                    case double d: w.WriteNumber(key, d); break;
                    case bool b: w.WriteBoolean(key, b); break;
                    default: w.WriteString(key, value.ToString()); break;
                }
            }
            w.WriteEndObject();
            w.Flush();
            Console.WriteLine();
            return ExitCodes.Ok;
        }
        int width = rows.Max(r => r.Key.Length);
        foreach (var (key, value) in rows)
            Console.WriteLine($"{key.PadRight(width)}  {Format(key, value)}");
        return ExitCodes.Ok;
    }

    private static List<KeyValuePair<string, object?>> Collect()
    {
        bool clflush = false, clflushopt = false, clwb = false;
        if (X86Base.IsSupported)
        {
            clflush = (X86Base.CpuId(1, 0).Edx & (1 << 19)) != 0;
            var leaf7 = X86Base.CpuId(7, 0);
            clflushopt = (leaf7.Ebx & (1 << 23)) != 0;
            clwb = (leaf7.Ebx & (1 << 24)) != 0;
        }
        return
        [
            new("page_size", SystemInfo.PageSize),
            new("cpus", SystemInfo.OnlineCpus),
            new("cpu.clflush", clflush),
            new("cpu.clflushopt", clflushopt),
            new("cpu.clwb", clwb),
            new("flush_instruction", SystemInfo.FlushInstruction.ToString().ToLowerInvariant()),
            new("thp.anon", MemoryStatus.TransparentHugePages),
            new("thp.shmem", MemoryStatus.ShmemHugePages),
            new("psi.available", MemoryStatus.PsiAvailable),
            new("psi.some_avg10", MemoryStatus.PsiSomeAvg10),
            new("cgroup.version", MemoryStatus.CgroupVersion),
            new("cgroup.limit_bytes", MemoryStatus.CgroupLimitBytes),
            new("mem.total_bytes", MemoryStatus.TotalBytes),
            new("mem.available_bytes", MemoryStatus.AvailableBytes),
            new("vm.max_map_count", MemoryStatus.MaxMapCount),
            new("process.rss_bytes", SystemInfo.ResidentBytes()),
            .. PressureSourceRows(),
        ];
    }

    // What the reclaim thread would watch here, detected by opening each source for real.
    private static List<KeyValuePair<string, object?>> PressureSourceRows()
    {
        var rows = new List<KeyValuePair<string, object?>>();
        var absent = new List<string>();
        var sources = PressureSources.Detect(absent);
        foreach (var s in sources)
        {
            rows.Add(new($"reclaim.source.{s.Name}", s.Mode));
            s.Dispose();
        }
        foreach (var a in absent)
        {
            int colon = a.IndexOf(':');
            rows.Add(new($"reclaim.source.{a[..colon]}", "absent:" + a[(colon + 1)..]));
        }
        return rows;
    }

    private static string Format(string key, object? value) => value switch
    {
        null when key.StartsWith("cgroup.limit", StringComparison.Ordinal) => "none",
        null => "unavailable",
        long l when key.EndsWith("_bytes", StringComparison.Ordinal) => $"{l:N0} ({Size.Format(l)})",
        bool b => b ? "yes" : "no",
        _ => value.ToString() ?? "",
    };
}
