using PagePool.Memory;

namespace PagePool.Cli.Stress;

/// <summary>
/// Everything a stress run does, resolved once from the command line (defaults included) by
/// <see cref="StressCommand"/>: the runner and the scenarios only read it, and the JSON summary records it.
/// </summary>
internal sealed class StressSettings
{
    internal required StressScenario Scenario { get; init; }
    internal required int Threads { get; init; }
    /// <summary>How long to run; null when <see cref="Operations"/> is set.</summary>
    internal TimeSpan? Duration { get; init; }
    /// <summary>Operations in all threads together; null when <see cref="Duration"/> is set.</summary>
    internal long? Operations { get; init; }
    internal required long WorkingSetBytes { get; init; }
    internal required long PoolLimitBytes { get; init; }
    internal required Mix<CachingMode> CachingMix { get; init; }
    internal required Mix<int> OrderMix { get; init; }
    internal required ulong Seed { get; init; }
    internal bool Verify { get; init; }
    internal bool InjectCorruption { get; init; }
    /// <summary>The JSON summary's file, "-" for standard output, or null.</summary>
    internal string? JsonPath { get; init; }
    /// <summary>The progress samples' file (CSV), "-" for standard output, or null.</summary>
    internal string? SamplesPath { get; init; }
    /// <summary>Run the reclaim thread with the machine's pressure sources.</summary>
    internal bool Reclaim { get; init; }

    // Scenario-specific settings go below, each with its option in StressCommand's scenario section.
    /// <summary>swap: "file" (frees memory) or "memfd".</summary>
    internal string SwapStore { get; init; } = "file";
    /// <summary>swap: the file store's folder, or null for the temp folder.</summary>
    internal string? SwapDir { get; init; }
    /// <summary>swap, mixed: resident buffer pages allowed; null for half of what the buffers hold (at most half a memory cgroup's limit).</summary>
    internal long? BufferLimitBytes { get; init; }
    /// <summary>swap: interrupted-restore or failing-write (dma faults are in <see cref="Dma"/>).</summary>
    internal string? Inject { get; init; }
    /// <summary>dma: ops kind, devices, mask, deferred flush and the misuse to inject.</summary>
    internal DmaStressSettings Dma { get; init; } = new();
}
