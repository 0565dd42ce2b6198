using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using PagePool.Cli.Stress;
using PagePool.Memory;

namespace PagePool.Cli;

/// <summary>pagepool stress: run a scenario on many threads and check that nothing was lost or corrupted.</summary>
internal static class StressCommand
{
    private static readonly long DefaultWorkingSet = Math.Min(256L << 20, SystemInfo.PhysicalMemoryBytes / 8);

    internal static Command Create()
    {
        var scenario = new Argument<string>("scenario")
        {
            Description = "What to run: " + string.Join("; ", StressScenario.All.Select(s => $"{s.Name} ({s.Description})")) + ".",
            DefaultValueFactory = _ => "mixed",
        };
        scenario.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string>();
            if (!StressScenario.All.Any(s => s.Name == v))
                r.AddError($"scenario: unknown '{v}'; accepted: {string.Join(", ", StressScenario.All.Select(s => s.Name))}.");
        });

        var threads = new Option<int>("--threads", "-t")
        {
            Description = "Worker threads (default: twice the CPUs, so threads are preempted and migrate).",
            DefaultValueFactory = _ => 2 * Environment.ProcessorCount,
        };
        threads.Validators.Add(r => { if (r.GetValueOrDefault<int>() is < 1 or > 1024) r.AddError("--threads: must be 1..1024."); });
        var duration = new Option<TimeSpan?>("--duration", "-d")
        {
            Description = "How long to run: 10s, 500ms, 2m (default 10s unless --ops is given).",
            HelpName = "TIME",
            CustomParser = r => ParseDuration(r),
        };
        var ops = new Option<long?>("--ops", "-n") { Description = "Stop after this many operations in all (instead of a duration).", HelpName = "N" };
        ops.Validators.Add(r => { if (r.GetValueOrDefault<long?>() is < 1) r.AddError("--ops: must be at least 1."); });
        var workingSet = new Option<long>("--working-set", "-w")
        {
            Description = $"Memory the workers hold at most, all threads together: 64M, 1G (default {Size.Format(DefaultWorkingSet)}).",
            HelpName = "SIZE",
            DefaultValueFactory = _ => DefaultWorkingSet,
            CustomParser = r => ParseSize(r, "--working-set", 1L << 20),
        };
        var poolLimit = new Option<long?>("--pool-limit")
        {
            Description = "Pool limit: 32M, 1G (default: half of RAM; churn uses a quarter and mixed half of the working set).",
            HelpName = "SIZE",
            CustomParser = r => ParseSize(r, "--pool-limit", 0),
        };
        var cachingMix = new Option<(CachingMode, int)[]>("--caching-mix")
        {
            Description = "Weights of caching modes for new buffers: wb:2,wc:1,uc:1 (default wb:1,wc:1,uc:1).",
            HelpName = "MIX",
            DefaultValueFactory = _ => [(CachingMode.WriteBack, 1), (CachingMode.WriteCombined, 1), (CachingMode.Uncached, 1)],
            CustomParser = r => ParseMix<CachingMode>(r, "--caching-mix", ParseCaching),
        };
        var orderMix = new Option<(int, int)[]>("--order-mix")
        {
            Description = "Weights of buffer sizes as orders (2^order pages): 0:8,3:2,9:1 (default 0:8,1:2,2:2,3:2,4:1,6:1,9:1).",
            HelpName = "MIX",
            DefaultValueFactory = _ => [(0, 8), (1, 2), (2, 2), (3, 2), (4, 1), (6, 1), (9, 1)],
            CustomParser = r => ParseMix<int>(r, "--order-mix", t => int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out int o) && o <= PhysicalMemory.MaxOrder ? o : (int?)null),
        };
        var seed = new Option<ulong>("--seed", "-s") { Description = "Seed: the same seed and --ops give the same operation sequence (default 1).", DefaultValueFactory = _ => 1 };
        var verify = new Option<bool>("--verify") { Description = "Write a checksum pattern into every byte and check it on every read back and at the end." };
        var json = new Option<string?>("--json") { Description = "Write the summary as a flat JSON object to FILE.", HelpName = "FILE" };
        var inject = new Option<bool>("--inject-corruption")
        {
            Description = "Testing aid: flip one byte of a live buffer behind the library's back; verification must catch it (exit 1).",
        };

        var reclaim = new Option<bool>("--reclaim")
        {
            Description = "Run the reclaim thread with this machine's pressure sources (PSI, cgroup limit, MemAvailable, GC): the pool gives pages back under memory pressure.",
        };

        var opsKind = new Option<string>("--ops-kind") { Description = "dma: how devices address memory: direct, iommu, swiotlb or xen (default iommu).", DefaultValueFactory = _ => "iommu" };
        opsKind.AcceptOnlyFromAmong("direct", "iommu", "swiotlb", "xen");
        var devices = new Option<int>("--devices") { Description = "dma: how many devices (default 4).", DefaultValueFactory = _ => 4 };
        devices.Validators.Add(r => { if (r.GetValueOrDefault<int>() is < 1 or > 64) r.AddError("--devices: must be 1..64."); });
        var mask = new Option<int>("--mask") { Description = "dma: the devices' DMA mask in bits, 12..64 (default 32).", HelpName = "BITS", DefaultValueFactory = _ => 32 };
        mask.Validators.Add(r => { if (r.GetValueOrDefault<int>() is < 12 or > 64) r.AddError("--mask: must be 12..64 bits."); });
        var deferredFlush = new Option<bool>("--deferred-flush") { Description = "dma: defer IOTLB invalidation to flush queues (250 entries or 10 ms)." };
        var swapStore = new Option<string>("--swap-store") { Description = "Where swapped buffer pages go: file (default; frees memory) or memfd (shmem: fast, frees nothing).", DefaultValueFactory = _ => "file" };
        swapStore.AcceptOnlyFromAmong("file", "memfd");
        var swapDir = new Option<string?>("--swap-dir") { Description = "Folder of the file swap store (default: the temp folder).", HelpName = "DIR" };
        var bufferLimit = new Option<long?>("--buffer-limit") { Description = "Resident buffer pages allowed (swap, mixed): 16M, 1G (default: half the working set).", HelpName = "SIZE", CustomParser = r => ParseSize(r, "--buffer-limit", 1L << 20) };
        var injectFault = new Option<string?>("--inject")
        {
            Description = "Testing aid: dma: missing-sync, stale-iotlb or wrong-pool, a misuse the checker must report (exit 1); swap: interrupted-restore or failing-write, faults the run must survive.",
            HelpName = "FAULT",
        };
        injectFault.AcceptOnlyFromAmong("missing-sync", "stale-iotlb", "wrong-pool", "interrupted-restore", "failing-write");

        var cmd = new Command("stress", "Run a stress scenario on many threads; exit 1 if verification or an invariant fails.")
        {
            scenario, threads, duration, ops, workingSet, poolLimit, cachingMix, orderMix, seed, verify, json, inject, reclaim,
            opsKind, devices, mask, deferredFlush, swapStore, swapDir, bufferLimit, injectFault,
        };
        cmd.Validators.Add(r =>
        {
            if (r.GetResult(duration) is not null && r.GetResult(ops) is not null)
                r.AddError("--duration and --ops: give one or the other, not both.");
        });
        cmd.SetAction(r =>
        {
            var chosen = StressScenario.All.Single(s => s.Name == r.GetValue(scenario));
            long? limit = r.GetValue(poolLimit);
            long? opCount = r.GetValue(ops);
            var settings = new StressSettings
            {
                Scenario = chosen,
                Threads = r.GetValue(threads),
                Operations = opCount,
                Duration = opCount is null ? r.GetValue(duration) ?? TimeSpan.FromSeconds(10) : null,
                WorkingSetBytes = r.GetValue(workingSet),
                PoolLimitBytes = limit ?? SystemInfo.PhysicalMemoryBytes / 2,
                PoolLimitGiven = limit is not null,
                CachingMix = r.GetValue(cachingMix)!,
                OrderMix = r.GetValue(orderMix)!,
                Seed = r.GetValue(seed),
                Verify = r.GetValue(verify),
                InjectCorruption = r.GetValue(inject),
                JsonPath = r.GetValue(json),
                Reclaim = r.GetValue(reclaim),
                SwapStore = r.GetValue(swapStore)!,
                SwapDir = r.GetValue(swapDir),
                BufferLimitBytes = r.GetValue(bufferLimit),
                Inject = r.GetValue(injectFault),
            };
            if (chosen is DmaScenario)
                return DmaStressRunner.Run(settings, new DmaStressSettings
                {
                    OpsKind = Enum.Parse<PagePool.Dma.DmaOpsKind>(r.GetValue(opsKind)!, ignoreCase: true),
                    Devices = r.GetValue(devices),
                    MaskBits = r.GetValue(mask),
                    DeferredFlush = r.GetValue(deferredFlush),
                    Inject = r.GetValue(injectFault) switch
                    {
                        "missing-sync" => DmaInjection.MissingSync, "stale-iotlb" => DmaInjection.StaleIotlb,
                        "wrong-pool" => DmaInjection.WrongPool, _ => DmaInjection.None,
                    },
                });
            return StressRunner.Run(settings);
        });
        return cmd;
    }

    private static TimeSpan? ParseDuration(ArgumentResult r)
    {
        string text = r.Tokens[0].Value;
        if (Duration.TryParse(text, out var d)) return d;
        r.AddError($"--duration: '{text}' is not a duration; use 10s, 500ms, 2m or 1h.");
        return null;
    }

    private static long ParseSize(ArgumentResult r, string option, long minimum)
    {
        string text = r.Tokens[0].Value;
        if (Size.TryParse(text, out long bytes) && bytes >= minimum) return bytes;
        r.AddError($"{option}: '{text}' is not a size of at least {Size.Format(minimum)}; use 64M, 1G or a byte count.");
        return 0;
    }

    private static CachingMode? ParseCaching(string t) => t.ToLowerInvariant() switch
    {
        "wb" => CachingMode.WriteBack,
        "wc" => CachingMode.WriteCombined,
        "uc" => CachingMode.Uncached,
        _ => null,
    };

    // "a:1,b:2" -> [(a,1),(b,2)]; weights are whole numbers, at least one of them positive.
    private static (T, int)[] ParseMix<T>(ArgumentResult r, string option, Func<string, T?> key) where T : struct
    {
        string text = r.Tokens[0].Value;
        var items = new List<(T, int)>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var kv = part.Split(':');
            if (kv.Length != 2 || key(kv[0]) is not { } k || !int.TryParse(kv[1], NumberStyles.None, CultureInfo.InvariantCulture, out int w) || w > 1_000_000)
            {
                r.AddError($"{option}: '{part}' is not KEY:WEIGHT (for example {(option == "--order-mix" ? "0:8,9:1 with orders 0..9" : "wb:2,wc:1 with modes wb, wc, uc")}).");
                return [];
            }
            items.Add((k, w));
        }
        if (items.Sum(i => i.Item2) == 0)
        {
            r.AddError($"{option}: '{text}' gives no positive weight.");
            return [];
        }
        return items.ToArray();
    }
}
