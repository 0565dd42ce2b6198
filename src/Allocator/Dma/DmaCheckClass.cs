namespace PagePool.Dma;

/// <summary>What the checker found wrong. The first eleven are Linux dma-debug's; the last four go beyond it.</summary>
public enum DmaCheckClass
{
    /// <summary>Unmap or free of an address the device never mapped (or already unmapped).</summary>
    NeverMapped,
    /// <summary>Unmap or free with a size other than the one mapped.</summary>
    WrongSize,
    /// <summary>Unmap with a direction other than the one mapped.</summary>
    WrongDirection,
    /// <summary>Undone by the wrong function: page vs single vs scatterlist vs coherent.</summary>
    WrongFunction,
    /// <summary>Free of coherent memory with a CPU address (block) other than the one allocated.</summary>
    DifferentCpuAddress,
    /// <summary>Scatterlist unmapped with an entry count other than the one passed to map.</summary>
    ScatterlistCountMismatch,
    /// <summary>A mapping was unmapped without its address ever being checked with MappingError.</summary>
    MapErrorNotChecked,
    /// <summary>Sync of an address the device has not mapped.</summary>
    SyncUnmapped,
    /// <summary>Sync of a range that runs past the end of the mapping.</summary>
    SyncOutOfRange,
    /// <summary>Sync with a direction other than the mapping's.</summary>
    SyncWrongDirection,
    /// <summary>Two active mappings the device may write share a cache line.</summary>
    OverlappingCacheline,
    /// <summary>A device was released with mappings still in place.</summary>
    PendingAtRelease,
    /// <summary>The CPU read a bounced buffer the device wrote, without sync_for_cpu (the bounce still holds the data).</summary>
    MissingSyncForCpu,
    /// <summary>The cached linear alias of a write-combined or uncached page was used.</summary>
    CachedAliasUse,
    /// <summary>A DMA-pool page was given to a pool other than the one it came from.</summary>
    WrongPool,
    /// <summary>A device reached a page through an IOTLB entry left stale by a deferred unmap.</summary>
    StaleIotlbAccess,
}
