using PagePool.Shrinker;
using PagePool.Pool;

namespace PagePool.Cli.Stress;

/// <summary>
/// Buffers of mixed sizes populated, filled with a verifiable pattern, bound to a 64-bit and a 32-bit device, swapped
/// out by the page limit, by explicit swap-outs and by reclaim scans, swapped back and verified.
/// </summary>
internal sealed class SwapScenario : StressScenario
{
    private readonly Func<StressSettings, long> _bytes;
    private SwapWorkload? _workload;

    /// <param name="bytes">What the buffers hold, all threads together: the whole working set unless given.</param>
    internal SwapScenario(Func<StressSettings, long>? bytes = null) => _bytes = bytes ?? (s => s.WorkingSetBytes);

    internal override string Name => "swap";
    internal override string Description => "buffers swapped out by the page limit and reclaim, moved between devices, restored and verified";

    internal override void Start(PoolAllocator pool, StressSettings settings, ShrinkerRegistry? shrinkers) => _workload = new SwapWorkload(pool, settings, shrinkers, _bytes(settings));

    internal override void Step(StressWorker w) => _workload!.Step(w);

    internal override IEnumerable<string> Finish() => _workload?.Finish() ?? [];

    internal override IEnumerable<(string Name, string Text, double Value)> Report() => _workload?.Report() ?? [];
}
