namespace PagePool.Faults;

/// <summary>
/// A place where PagePool touches the system or runs out of something, and where a failure can be injected on
/// purpose (<see cref="FaultInjector"/>) to prove the failure is reported and survived: a typed error, nothing
/// leaked, nothing lost, and everything working again once the fault clears.
/// </summary>
public enum FaultPoint
{
    /// <summary>mmap fails with ENOMEM (mapping an arena, reserving address space).</summary>
    Mmap,
    /// <summary>memfd_create fails with EMFILE (creating an arena's memory file).</summary>
    MemfdCreate,
    /// <summary>ftruncate fails with ENOSPC (sizing an arena's memory file).</summary>
    Ftruncate,
    /// <summary>madvise fails with EINVAL.</summary>
    Madvise,
    /// <summary>mprotect fails with ENOMEM (a caching change of the cached alias).</summary>
    Mprotect,
    /// <summary>fallocate fails with EIO (punching freed pages out of an arena).</summary>
    Fallocate,
    /// <summary>A write to a swap store fails with EIO.</summary>
    SwapWrite,
    /// <summary>A read from a swap store fails with EIO.</summary>
    SwapRead,
    /// <summary>A write to a swap store finds the disk full (ENOSPC).</summary>
    SwapDiskFull,
    /// <summary>The IOVA allocator finds no free range (the device's address space is exhausted).</summary>
    IovaSpace,
    /// <summary>swiotlb finds no free bounce slots.</summary>
    SwiotlbSlots,
    /// <summary>The DMA32 zone has no free block.</summary>
    Dma32Zone,
    /// <summary>mremap fails with ENOMEM (mapping a buffer's pages into its stable CPU address range).</summary>
    Mremap,
    /// <summary>Under Xen, the hypervisor refuses to exchange a block for machine-contiguous frames (xen_create_contiguous_region fails).</summary>
    XenExchange,
}
