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

    internal IovaSpaceExhaustedException(string device, int maskBits, long pages, long usedPages, long spacePages)
        : base(device, 0, Describe(device, maskBits, pages, usedPages, spacePages))
    {
        Pages = pages;
        UsedPages = usedPages;
        SpacePages = spacePages;
    }

    // A space smaller than the mapping is the mask's doing, not the mappings': say so, not "0 of 0 pages are mapped".
    private static string Describe(string device, int maskBits, long pages, long usedPages, long spacePages)
    {
        if (spacePages == 0)
            return $"Device '{device}': its {maskBits}-bit DMA mask leaves no usable IOVA space (IOVA page 0 is reserved), " +
                   $"so no range of {pages} page(s) can be mapped. Give it a wider DMA mask.";
        if (spacePages < pages)
            return $"Device '{device}': its {maskBits}-bit DMA mask leaves only {spacePages} page(s) of IOVA space, fewer than the " +
                   $"{pages} asked for. Give it a wider DMA mask, or map smaller pieces.";
        return $"Device '{device}': no IOVA range of {pages} page(s) is free; {usedPages} of {spacePages} pages " +
               $"({usedPages * 4} of {spacePages * 4} KiB) of its IOMMU address space are mapped. Unmap buffers the device " +
               "no longer uses, or give it a wider DMA mask.";
    }
}
