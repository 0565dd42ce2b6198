namespace PagePool.Cli.Stress;

/// <summary>A DMA misuse `stress dma --inject` commits once, which the checker must report.</summary>
internal enum DmaInjection
{
    /// <summary>Nothing injected.</summary>
    None,
    /// <summary>The CPU reads a bounced buffer the device wrote, without sync_for_cpu.</summary>
    MissingSync,
    /// <summary>A device writes through an IOTLB entry left stale by a deferred unmap.</summary>
    StaleIotlb,
    /// <summary>A DMA-pool page is given to another device's pool.</summary>
    WrongPool,
}
