using System.Runtime.CompilerServices;
using PagePool.Dma;
using PagePool.Memory;

namespace PagePool.Cli.Stress;

/// <summary>
/// DMA round trips. `stress dma` runs them with its own runner (<see cref="DmaStressRunner"/>: ops kind, devices,
/// mask, injection); inside `mixed` each step is one round trip on a small DMA machine of its own (an IOMMU device
/// with deferred flush, a bouncing 32-bit device and a non-coherent direct one), checker on, so mixed covers DMA too.
/// </summary>
internal sealed class DmaScenario : StressScenario
{
    private static readonly ConditionalWeakTable<StressWorker, DmaLane> s_lanes = new();
    private static readonly Lazy<MixedDma> s_mixed = new(() => new MixedDma());

    internal override string Name => "dma";
    internal override string Description => "devices map, read and write through DMA addresses, sync, verify every byte, unmap (see --ops-kind)";

    internal override void Step(StressWorker w)
    {
        var mixed = s_mixed.Value;
        var lane = s_lanes.GetValue(w, x => mixed.Lane(x.Index));
        long failures = lane.VerifyFailures;
        lane.Step();
        w.Operations++;
        if (lane.VerifyFailures != failures)
        {
            w.VerifyFailures += lane.VerifyFailures - failures;
            lock (w.Failures) w.Failures.AddRange(lane.Failures.Skip(w.Failures.Count).Take(8));
        }
        if (mixed.Platform.Checker!.ReportCount > 0 && Interlocked.Exchange(ref mixed.Reported, 1) == 0)
        {
            w.VerifyFailures++;
            lock (w.Failures) w.Failures.Add("DMA checker: " + mixed.Platform.Checker.Reports[0]);
        }
    }

    // Lives for the process: mixed has no teardown hook for scenarios, and the memory is the process's to drop.
    private sealed class MixedDma
    {
        internal readonly DmaPlatform Platform;
        private readonly DmaDevice[] _devices;
        private readonly DmaPagePool[] _pools;
        internal int Reported;

        internal MixedDma()
        {
            var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 32L << 20, Dma32Bytes = 256L << 20, NormalBytes = 64L << 20 });
            Platform = new DmaPlatform(memory, new DmaPlatformOptions { Checker = true, DeferredFlush = true, SwiotlbBytes = 32L << 20 });
            _devices =
            [
                Platform.CreateDevice(new DmaDeviceOptions { Name = "mixed-iommu", OpsKind = DmaOpsKind.Iommu }),
                Platform.CreateDevice(new DmaDeviceOptions { Name = "mixed-bounce", OpsKind = DmaOpsKind.Swiotlb, MaskBits = 32 }),
                Platform.CreateDevice(new DmaDeviceOptions { Name = "mixed-direct", OpsKind = DmaOpsKind.Direct, MaskBits = 32, Coherent = false }),
            ];
            _pools = _devices.Select(d => new DmaPagePool(d)).ToArray();
        }

        internal DmaLane Lane(int index) => new(Platform, _devices, _pools, index + 1);
    }
}
