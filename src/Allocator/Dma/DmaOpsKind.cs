namespace PagePool.Dma;

/// <summary>How a device's DMA addresses are made: the device's dma_map_ops, chosen when it is created.</summary>
public enum DmaOpsKind
{
    /// <summary>Bus address = physical address (dma-direct). Memory above the device's mask is a mapping error.</summary>
    Direct,
    /// <summary>An IOMMU translates: each device has its own domain, IO page table, IOTLB and IOVA space.</summary>
    Iommu,
    /// <summary>Every streaming mapping bounces through the swiotlb pool (swiotlb=force, as in confidential guests).</summary>
    Swiotlb,
    /// <summary>Xen: pseudo-physical frames go to machine frames via the P2M; bounces through swiotlb when they do not fit.</summary>
    Xen,
}
