using PagePool.Shrinker;
using PagePool.Dma;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Cli.Stress;

/// <summary>
/// DMA round trips: devices map, read and write through their DMA addresses, sync, verify every byte and unmap,
/// with the dma-debug checker on. `stress dma` builds its devices from the command (--ops-kind, --devices, --mask,
/// --deferred-flush, --inject); inside `mixed` a small machine of three devices (an IOMMU device with deferred
/// flush, a bouncing 32-bit device, a non-coherent direct one) gives mixed its DMA steps. The runner brings the
/// threads, progress, JSON and exit code like any scenario; checker reports and left-over bounce slots are broken
/// invariants at the end (so an injected misuse ends the run with exit 1 and its report).
/// </summary>
internal sealed class DmaScenario : StressScenario
{
    private DmaMachine? _machine;

    internal override string Name => "dma";
    internal override string Description => "devices map, read and write through DMA addresses, sync, verify every byte, unmap (see --ops-kind)";

    internal override void Start(PoolAllocator pool, StressSettings settings, ShrinkerRegistry? shrinkers)
        => _machine = settings.Scenario is DmaScenario ? new DmaMachine(settings, settings.Dma) : DmaMachine.ForMixed(settings);

    internal override void Step(StressWorker w)
    {
        var lane = _machine!.Lanes[w.Index];
        long failures = lane.VerifyFailures;
        lane.Step(w);
        w.Operations++;
        if (lane.VerifyFailures != failures)
        {
            w.VerifyFailures += lane.VerifyFailures - failures;
            foreach (var f in lane.Failures.Skip(w.Failures.Count).Take(8 - w.Failures.Count)) w.Failures.Add(f);
        }
    }

    /// <summary>A byte the device wrote, flipped in the lane's next streaming round trip before the CPU checks it (mixed corrupts a pool buffer: its own scenario's hook).</summary>
    internal override void InjectCorruption(StressWorker w)
    {
        _machine!.Lanes[w.Index].CorruptNext = true;
        w.Injected = true;
    }

    internal override IEnumerable<string> Finish()
    {
        if (_machine is null) return [];
        var problems = _machine.Finish();
        return problems;
    }

    internal override IEnumerable<(string Name, string Text, double Value)> Report()
        => _machine?.Report() ?? [];
}
