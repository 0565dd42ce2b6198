using PagePool.Dma;

namespace PagePool.Cli.Stress;

/// <summary>What `stress dma` was asked for beyond the common settings (<see cref="StressSettings.Dma"/>).</summary>
internal sealed class DmaStressSettings
{
    internal DmaOpsKind OpsKind { get; init; } = DmaOpsKind.Iommu;
    internal int Devices { get; init; } = 4;
    internal int MaskBits { get; init; } = 32;
    internal bool DeferredFlush { get; init; }
    internal DmaInjection Inject { get; init; }
}
