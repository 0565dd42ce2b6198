using PagePool.Memory;

namespace PagePool.Cli.Stress;

/// <summary>Everything a stress run was asked for, validated. Scenarios may adjust it in Configure.</summary>
internal sealed class StressSettings
{
    internal required StressScenario Scenario { get; init; }
    internal int Threads { get; set; }
    internal TimeSpan? Duration { get; set; }
    internal long? Operations { get; set; }
    internal long WorkingSetBytes { get; set; }
    internal long PoolLimitBytes { get; set; }
    internal bool PoolLimitGiven { get; init; }
    internal required (CachingMode Mode, int Weight)[] CachingMix { get; init; }
    internal required (int Order, int Weight)[] OrderMix { get; init; }
    internal ulong Seed { get; init; }
    internal bool Verify { get; init; }
    internal bool InjectCorruption { get; init; }
    internal string? JsonPath { get; init; }
    internal bool Reclaim { get; init; }
    internal string SwapStore { get; init; } = "file";
    internal string? SwapDir { get; init; }
    internal long? BufferLimitBytes { get; init; }
    internal string? Inject { get; init; }
}
