using System.CommandLine;
using System.Globalization;
using PagePool.Cli.Stress;
using PagePool.Memory;

namespace PagePool.Cli;

/// <summary>
/// pagepool stress: run a scenario on many threads and check that nothing was lost or corrupted. Every option is
/// parsed by its own parser (errors name the option and say what it accepts); <see cref="Resolve"/> turns the
/// parse into <see cref="StressSettings"/> with every default applied, once, for the validator and the run alike.
/// </summary>
internal static class StressCommand
{
    private static readonly long Ram = SystemInfo.PhysicalMemoryBytes;
    private static readonly long DefaultWorkingSet = Math.Min(256L << 20, Ram / 8);
    private static readonly TimeSpan DefaultDuration = TimeSpan.FromSeconds(10);
    private const long MaxOperations = 1_000_000_000_000;
    private const string DefaultScenario = "mixed";

    internal static readonly Mix<CachingMode> DefaultCachingMix =
        new([(CachingMode.WriteBack, 1), (CachingMode.WriteCombined, 1), (CachingMode.Uncached, 1)], CachingName);
    internal static readonly Mix<int> DefaultOrderMix =
        new([(0, 8), (1, 2), (2, 2), (3, 2), (4, 1), (6, 1), (9, 1)], o => o.ToString(CultureInfo.InvariantCulture));

    /// <summary>The command's options, so that <see cref="Resolve"/> can read them.</summary>
    private sealed class Options
    {
        internal readonly Argument<string> Scenario = new("SCENARIO")
        {
            Description = "What to run: " + string.Join("; ", StressScenario.All.Select(s => $"{s.Name} ({s.Description})")) + ".",
            HelpName = "SCENARIO",
            DefaultValueFactory = _ => DefaultScenario,
            CustomParser = r => Arguments.OneOf(r, "scenario", StressScenario.All.Select(s => s.Name).ToArray(), DefaultScenario),
        };
        internal readonly Option<int?> Threads = new("--threads", "-t")
        {
            Description = "Worker threads (default: twice the CPUs, so threads are preempted and migrate).",
            HelpName = "N",
            CustomParser = r => Arguments.Whole("--threads", 1, 1024)(r),
        };
        internal readonly Option<TimeSpan?> Duration = new("--duration", "-d")
        {
            Description = "How long to run: 10s, 500ms, 2m (default 10s unless --ops is given).",
            HelpName = "TIME",
            CustomParser = r => Arguments.Time(r, "--duration"),
        };
        internal readonly Option<long?> Ops = new("--ops", "-n")
        {
            Description = "Stop after this many operations in all (instead of a duration).",
            HelpName = "N",
            CustomParser = r => Arguments.Whole("--ops", 1L, MaxOperations)(r),
        };
        internal readonly Option<long?> WorkingSet = new("--working-set", "-w")
        {
            Description = $"Memory the workers hold at most, all threads together: 64M, 1G (default {Size.Argument(DefaultWorkingSet)}, or more where each thread's share must hold the largest buffer).",
            HelpName = "SIZE",
            CustomParser = Arguments.Bytes("--working-set", 1L << 20, Ram, "at most this machine's memory"),
        };
        internal readonly Option<long?> PoolLimit = new("--pool-limit")
        {
            Description = "Most the pool keeps: 32M, 1G (default half of RAM; churn a quarter of the working set, mixed a thirty-second).",
            HelpName = "SIZE",
            CustomParser = Arguments.Bytes("--pool-limit", 0, Ram, "at most this machine's memory"),
        };
        internal readonly Option<Mix<CachingMode>?> CachingMix = new("--caching-mix")
        {
            Description = $"Weights of caching modes for new buffers, modes wb, wc, uc (default {DefaultCachingMix}).",
            HelpName = "MIX",
            CustomParser = Mix<CachingMode>.Parser("--caching-mix", "wb:2,wc:1,uc:1", ParseCaching, CachingName),
        };
        internal readonly Option<Mix<int>?> OrderMix = new("--order-mix")
        {
            Description = $"Weights of buffer sizes as orders 0..{PhysicalMemory.MaxOrder} (2^order pages) (default {DefaultOrderMix}).",
            HelpName = "MIX",
            CustomParser = Mix<int>.Parser("--order-mix", "0:8,3:2,9:1", ParseOrder, o => $"order {o}"),
        };
        internal readonly Option<ulong?> Seed = new("--seed", "-s")
        {
            Description = "Seed: the same seed and --ops give the same operation sequence (default 1).",
            HelpName = "N",
            CustomParser = r => Arguments.Whole("--seed", 0UL, ulong.MaxValue)(r),
        };
        internal readonly Option<bool> Verify = new("--verify") { Description = "Write a checksum pattern into every byte and check it on every read back and at the end." };
        internal readonly Option<string?> Json = new("--json")
        {
            Description = "Write the summary as JSON to FILE (- for standard output); checked before the run.",
            HelpName = "FILE",
            CustomParser = r => Arguments.OutputPath(r, "--json", allowStdout: true),
        };
        internal readonly Option<string?> Samples = new("--samples")
        {
            Description = "Write one CSV row per progress interval to FILE (- for standard output), to plot a run.",
            HelpName = "FILE",
            CustomParser = r => Arguments.OutputPath(r, "--samples", allowStdout: true),
        };
        internal readonly Option<bool> Inject = new("--inject-corruption")
        {
            Description = "Testing aid: flip one byte of a live buffer behind the library's back; verification must catch it (exit 1).",
        };

        internal readonly Option<bool> Reclaim = new("--reclaim")
        {
            Description = "Run the reclaim thread with this machine's pressure sources (PSI, cgroup limit, MemAvailable, GC): the pool gives pages back under memory pressure.",
        };

        // ---- scenario-specific options: declare them here, add them in All, read them in Resolve ----

        internal readonly Option<string?> OpsKind = new("--ops-kind")
        {
            Description = "dma: how devices address memory: direct, iommu, swiotlb or xen (default iommu).",
            HelpName = "KIND",
            CustomParser = r => Arguments.OneOf(r, "--ops-kind", ["direct", "iommu", "swiotlb", "xen"], "iommu"),
        };
        internal readonly Option<int?> Devices = new("--devices")
        {
            Description = "dma: how many devices, 1..64 (default 4); every fourth does not snoop CPU caches.",
            HelpName = "N",
            CustomParser = r => Arguments.Whole("--devices", 1, 64)(r),
        };
        internal readonly Option<int?> Mask = new("--mask")
        {
            Description = "dma: the devices' DMA mask in bits, 12..64 (default 32); a mask that cannot reach the run's memory (direct, swiotlb), IOVA space (iommu) or machine addresses below 4 GiB (xen) is refused.",
            HelpName = "BITS",
            CustomParser = r => Arguments.Whole("--mask", 12, 64)(r),
        };
        internal readonly Option<bool> DeferredFlush = new("--deferred-flush") { Description = "dma: defer IOTLB invalidation to flush queues (250 entries or 10 ms)." };
        internal readonly Option<string?> SwapStore = new("--swap-store")
        {
            Description = "swap: where swapped buffer pages go: file (default; frees memory) or memfd (shmem: fast, frees nothing).",
            HelpName = "STORE",
            CustomParser = r => Arguments.OneOf(r, "--swap-store", ["file", "memfd"], "file"),
        };
        internal readonly Option<string?> SwapDir = new("--swap-dir")
        {
            Description = "swap: folder of the file swap store (default: the temp folder); checked before the run.",
            HelpName = "DIR",
            CustomParser = r => Arguments.Folder(r, "--swap-dir"),
        };
        internal readonly Option<long?> BufferLimit = new("--buffer-limit")
        {
            Description = "swap, mixed: resident buffer pages allowed: 16M, 1G (default: half of what the buffers hold, mixed 15/16 of the working set; at most half a memory cgroup's limit).",
            HelpName = "SIZE",
            CustomParser = Arguments.Bytes("--buffer-limit", 1L << 20, Ram, "at most this machine's memory"),
        };
        internal static readonly string[] DmaFaults = DmaInjections.Names, SwapFaults = ["interrupted-restore", "failing-write"];
        internal static readonly string[] DmaScenarios = ["dma"], SwapScenarios = ["swap", "mixed"];
        /// <summary>Each --inject fault with the scenarios that commit it.</summary>
        internal static readonly (string[] Faults, string[] Users)[] FaultsOf = [(DmaFaults, DmaScenarios), (SwapFaults, SwapScenarios)];
        internal readonly Option<string?> InjectFault = new("--inject")
        {
            Description = "Testing aid: dma: missing-sync (swiotlb, xen), stale-iotlb (iommu with --deferred-flush) or wrong-pool (2 devices or more), a misuse of the run's first devices the checker must report (exit 1); swap and mixed: interrupted-restore or failing-write, faults the run must survive.",
            HelpName = "FAULT",
            CustomParser = r => Arguments.OneOf(r, "--inject", [.. DmaFaults, .. SwapFaults], ""),
        };

        /// <summary>The options only some scenarios read, with those scenarios (--inject is checked per fault).</summary>
        internal IEnumerable<(Option Option, string[] Users)> ScenarioOptions =>
            [(OpsKind, DmaScenarios), (Devices, DmaScenarios), (Mask, DmaScenarios), (DeferredFlush, DmaScenarios),
             (SwapStore, SwapScenarios), (SwapDir, SwapScenarios), (BufferLimit, SwapScenarios)];

        internal IEnumerable<Symbol> All =>
            [Scenario, Threads, Duration, Ops, WorkingSet, PoolLimit, CachingMix, OrderMix, Seed, Verify, Json, Samples, Inject, Reclaim,
             OpsKind, Devices, Mask, DeferredFlush, SwapStore, SwapDir, BufferLimit, InjectFault];
    }

    internal static Command Create()
    {
        var o = new Options();
        o.Scenario.CompletionSources.Add(StressScenario.All.Select(s => s.Name).ToArray());
        o.CachingMix.CompletionSources.Add("wb:1,wc:1,uc:1", "wb:1", "wc:1", "uc:1", "wb:2,wc:1,uc:1");
        o.OrderMix.CompletionSources.Add(DefaultOrderMix.ToString(), "0:1", "9:1", "0:8,3:2,9:1");

        var cmd = new Command("stress", "Run a stress scenario on many threads; exit 1 if verification or an invariant fails.");
        foreach (var symbol in o.All)
        {
            if (symbol is Option option) cmd.Options.Add(option);
            else cmd.Arguments.Add((Argument)symbol);
        }
        // Validators see which options were given, never their values: a value is converted (and its error
        // reported) by its own parser, and read only by the action, after every error was reported.
        cmd.Validators.Add(r =>
        {
            if (r.GetResult(o.Duration) is not null && r.GetResult(o.Ops) is not null)
                r.AddError("--duration and --ops: give one or the other, not both.");
        });
        cmd.SetAction(r => StressRunner.Run(Resolve(o, r), r.InvocationConfiguration.Output, r.InvocationConfiguration.Error));
        return cmd;
    }

    /// <summary>The one place where the command line becomes settings, every default applied.</summary>
    private static StressSettings Resolve(Options o, ParseResult r)
    {
        string name = r.GetValue(o.Scenario) ?? DefaultScenario;
        var scenario = StressScenario.All.Single(s => s.Name == name);
        // An option of other scenarios would be silently ignored by this one: the run would not be what was asked.
        foreach (var (option, users) in o.ScenarioOptions)
            if (r.GetResult(option) is { Implicit: false } && !users.Contains(name))
                throw new UsageException($"{option.Name}: only the {Scenarios(users)} scenario{(users.Length == 1 ? "" : "s")} use{(users.Length == 1 ? "s" : "")} it; {name} would ignore it.");
        if (r.GetValue(o.InjectFault) is { Length: > 0 } injected)
        {
            var (faults, users) = Options.FaultsOf.First(f => f.Faults.Contains(injected));
            string takes = string.Join(", ", Options.FaultsOf.Where(f => f.Users.Contains(name)).SelectMany(f => f.Faults));
            if (!users.Contains(name))
                throw new UsageException($"--inject: '{injected}' is a fault of the {Scenarios(users)} scenario{(users.Length == 1 ? "" : "s")}" +
                                         $" ({string.Join(", ", faults)}); {name} takes {(takes.Length > 0 ? takes : "none")}.");
        }
        long? ops = r.GetValue(o.Ops);
        TimeSpan? duration = r.GetValue(o.Duration);
        int threads = r.GetValue(o.Threads) ?? 2 * Environment.ProcessorCount;
        var orderMix = r.GetValue(o.OrderMix) ?? DefaultOrderMix;
        // The default grows with the threads where it must (many CPUs, or mixed, whose pool buffers are a sixteenth
        // of it): every thread's share has to hold the largest buffer the order mix asks for.
        long workingSet = r.GetValue(o.WorkingSet)
                          ?? (scenario is DmaScenario or SwapScenario ? DefaultWorkingSet : Math.Max(DefaultWorkingSet, SmallestWorkingSet(scenario, threads, orderMix)));
        if (scenario is not (DmaScenario or SwapScenario) && ShareProblem(scenario, workingSet, threads, orderMix) is { } share)
            throw new UsageException(share);
        return new StressSettings
        {
            Scenario = scenario,
            Threads = threads,
            Operations = ops,
            Duration = ops is null ? duration ?? DefaultDuration : null,
            WorkingSetBytes = workingSet,
            PoolLimitBytes = r.GetValue(o.PoolLimit) ?? scenario.DefaultPoolLimit(workingSet, Ram),
            CachingMix = r.GetValue(o.CachingMix) ?? DefaultCachingMix,
            OrderMix = orderMix,
            Seed = r.GetValue(o.Seed) ?? 1,
            Verify = r.GetValue(o.Verify),
            InjectCorruption = r.GetValue(o.Inject),
            JsonPath = r.GetValue(o.Json),
            SamplesPath = r.GetValue(o.Samples),
            Reclaim = r.GetValue(o.Reclaim),
            SwapStore = r.GetValue(o.SwapStore) ?? "file",
            SwapDir = r.GetValue(o.SwapDir),
            BufferLimitBytes = r.GetValue(o.BufferLimit),
            Inject = r.GetValue(o.InjectFault) is { Length: > 0 } fault && Options.SwapFaults.Contains(fault) ? fault : null,
            Dma = scenario is DmaScenario ? ResolveDma(o, r, workingSet, threads) : new DmaStressSettings(),
        };
    }

    /// <summary>
    /// Why each thread's share of the working set cannot hold the largest buffer the order mix asks for, or null.
    /// A worker allocates only what fits its share; with a share below the largest buffer, those buffers never
    /// fit and a worker holding nothing could not make progress.
    /// </summary>
    internal static string? ShareProblem(StressScenario scenario, long workingSet, int threads, Mix<int> orderMix)
    {
        long largest = LargestBuffer(orderMix);
        long share = scenario.PoolShareBytes(workingSet) / threads;
        if (share >= largest) return null;
        long smallest = SmallestWorkingSet(scenario, threads, orderMix);
        string ofIt = scenario.PoolShareBytes(workingSet) == workingSet ? "" : $" ({Size.Format(scenario.PoolShareBytes(workingSet))} of it in pool buffers)";
        return $"--working-set: {Size.Format(workingSet)}{ofIt} over {threads} thread{(threads == 1 ? "" : "s")} is {Size.Format(share)} a thread, " +
               $"less than the largest buffer --order-mix asks for ({Size.Format(largest)}); the smallest working set for {threads} thread{(threads == 1 ? "" : "s")} " +
               $"and this order mix is {Size.Argument(smallest)}.";
    }

    private static long LargestBuffer(Mix<int> orderMix) => (long)PhysicalMemory.PageSize << orderMix.Items.Where(i => i.Weight > 0).Max(i => i.Key);

    /// <summary>The smallest working set whose share per thread holds the largest buffer (mixed holds only part of it in pool buffers).</summary>
    internal static long SmallestWorkingSet(StressScenario scenario, int threads, Mix<int> orderMix)
    {
        long largest = LargestBuffer(orderMix);
        long lo = largest * threads, hi = lo * 1024; // whole pages: the share is monotone in the working set
        while (lo < hi)
        {
            long mid = (lo / PhysicalMemory.PageSize + hi / PhysicalMemory.PageSize) / 2 * PhysicalMemory.PageSize;
            if (scenario.PoolShareBytes(mid) / threads >= largest) hi = mid;
            else lo = mid + PhysicalMemory.PageSize;
        }
        return lo;
    }

    private static string Scenarios(string[] names) => string.Join(" and ", names);

    // The dma scenario's own settings (Resolve has refused faults of other scenarios).
    private static DmaStressSettings ResolveDma(Options o, ParseResult r, long workingSet, int threads)
    {
        var kind = Enum.Parse<PagePool.Dma.DmaOpsKind>(r.GetValue(o.OpsKind) ?? "iommu", ignoreCase: true);
        int devices = r.GetValue(o.Devices) ?? 4, mask = r.GetValue(o.Mask) ?? 32;
        bool deferred = r.GetValue(o.DeferredFlush);
        // A mask the devices cannot work with would only end the run in mapping errors: refuse it before anything runs.
        if (DmaMachine.MaskProblem(kind, mask, workingSet, threads, devices) is { } problem) throw new UsageException(problem);
        var inject = DmaInjections.Parse(r.GetValue(o.InjectFault));
        // The misuse is committed on the run's own devices: refuse one they cannot commit.
        if (DmaMachine.InjectionProblem(inject, kind, devices, deferred) is { } cannot) throw new UsageException(cannot);
        return new DmaStressSettings { OpsKind = kind, Devices = devices, MaskBits = mask, DeferredFlush = deferred, Inject = inject };
    }

    private static (CachingMode?, string?) ParseCaching(string t) => t.ToLowerInvariant() switch
    {
        "wb" => (CachingMode.WriteBack, null),
        "wc" => (CachingMode.WriteCombined, null),
        "uc" => (CachingMode.Uncached, null),
        _ => (null, $"'{Arguments.Shorten(t)}' is not a caching mode; use wb, wc or uc"),
    };

    private static (int?, string?) ParseOrder(string t)
    {
        if (!int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out int order) && !(t.Length > 0 && t.All(char.IsAsciiDigit)))
            return (null, $"the order '{Arguments.Shorten(t)}' is not a whole number from 0 to {PhysicalMemory.MaxOrder}");
        if (t.Length > 9 || order > PhysicalMemory.MaxOrder)
            return (null, $"the order {Arguments.Shorten(t)} is outside 0..{PhysicalMemory.MaxOrder} (a buffer is at most 2^{PhysicalMemory.MaxOrder} pages)");
        return (order, null);
    }

    /// <summary>"wb", "wc", "uc": how modes are typed and shown.</summary>
    internal static string CachingName(CachingMode mode) => mode switch
    {
        CachingMode.WriteBack => "wb",
        CachingMode.WriteCombined => "wc",
        _ => "uc",
    };
}
