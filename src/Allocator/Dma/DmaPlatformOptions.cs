namespace PagePool.Dma;

/// <summary>The machine's DMA setup: swiotlb size, IOTLB invalidation policy, and whether the checker runs.</summary>
public sealed class DmaPlatformOptions
{
    /// <summary>
    /// Bytes of swiotlb bounce memory, taken from the DMA32 zone when the first bouncing device is created. Default
    /// 64 MiB, as Linux. The pool is one physically contiguous range inside one arena, as Linux's is one range: it
    /// must not exceed <see cref="Memory.MemoryOptions.ArenaBytes"/>, and an arena of the zone must be free enough to
    /// hold it (creating that device fails with a <see cref="PagePoolException"/> naming the sizes otherwise).
    /// </summary>
    public long SwiotlbBytes { get; init; } = 64L << 20;

    /// <summary>Defer IOTLB invalidation after unmap to a flush queue (iommu.strict=0). Default false (strict).</summary>
    public bool DeferredFlush { get; init; }

    /// <summary>Entries a flush queue holds before it flushes (Linux IOVA_FQ_SIZE is 256; DESIGN.md: 250).</summary>
    public int FlushQueueEntries { get; init; } = 250;

    /// <summary>Oldest age of a queued unmap before the flush timer invalidates it (Linux IOVA_FQ_TIMEOUT 10 ms).</summary>
    public TimeSpan FlushTimeout { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Run the dma-debug checker (Linux CONFIG_DMA_API_DEBUG). Costs a lock and a table update per map. Default false.</summary>
    public bool Checker { get; init; }

    internal void Validate()
    {
        if (SwiotlbBytes < 0 || SwiotlbBytes % (2L << 20) != 0)
            throw new ArgumentOutOfRangeException(nameof(SwiotlbBytes), SwiotlbBytes, "SwiotlbBytes must be a non-negative multiple of 2 MiB.");
        if (FlushQueueEntries < 1)
            throw new ArgumentOutOfRangeException(nameof(FlushQueueEntries), FlushQueueEntries, "A flush queue holds at least one entry.");
        if (FlushTimeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(FlushTimeout), FlushTimeout, "The flush timeout must be positive.");
    }
}
