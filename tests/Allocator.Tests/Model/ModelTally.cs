namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// What a model run did, for the test's output and the README figure: per kind the steps that acted (a step with
/// nothing to act on does nothing) and of those the ones refused as the model predicted (a typed error, or a DMA
/// fault), and counts of the events the model predicted along the way.
/// </summary>
public sealed class ModelTally
{
    public readonly int[] Acted = new int[Enum.GetValues<ModelOpKind>().Length];
    public readonly int[] Refused = new int[Enum.GetValues<ModelOpKind>().Length];
    /// <summary>Device accesses that faulted where the model said the device holds no mapping.</summary>
    public long Faults;
    /// <summary>CPU reads of a bounced buffer the device wrote without a sync: old bytes seen, and reported.</summary>
    public long StaleCpuReads;
    /// <summary>Binds that copied 64-bit pages into DMA32 for a 32-bit device.</summary>
    public long CopiesToDma32;
    /// <summary>Bytes devices read or wrote through DMA addresses and compared with the model.</summary>
    public long DeviceBytes;
    /// <summary>Page arrays the accounting swapped out or purged for room, each one predicted by the model's LRU.</summary>
    public long Evictions;
}
