namespace PagePool.Dma;

/// <summary>The device's IOVA space has no free range of the size asked for, even after flushing the IOVA caches.</summary>
public sealed class IovaSpaceExhaustedException : DmaMappingException
{
    /// <summary>Pages asked for.</summary>
    public long Pages { get; }

    /// <summary>Pages of the space in use (allocated ranges, cached ones excluded after the flush).</summary>
    public long UsedPages { get; }

    /// <summary>Pages the space holds below the device's limit.</summary>
    public long SpacePages { get; }

    internal IovaSpaceExhaustedException(string device, long pages, long usedPages, long spacePages)
        : base(device, 0, $"Device '{device}': no IOVA range of {pages} page(s) is free; {usedPages} of {spacePages} pages " +
               $"({usedPages * 4} of {spacePages * 4} KiB) of its IOMMU address space are mapped. Unmap buffers the device " +
               "no longer uses, or give it a wider DMA mask.")
    {
        Pages = pages;
        UsedPages = usedPages;
        SpacePages = spacePages;
    }
}
