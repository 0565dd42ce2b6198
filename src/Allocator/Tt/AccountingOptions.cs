namespace PagePool.Tt;

/// <summary>The limits <see cref="BufferAccounting"/> enforces (TTM's ttm_tt_mgr_init arguments).</summary>
public sealed class AccountingOptions
{
    /// <summary>Bytes of buffer pages resident at once. Default: half of RAM, as TTM's ttm_pages_limit.</summary>
    public long PageLimitBytes { get; init; } = SystemInfo.PhysicalMemoryBytes / 2;

    /// <summary>
    /// Bytes of resident buffer pages in the DMA32 zone. Default: min(low memory, 2 GiB) as TTM's
    /// ttm_dma32_pages_limit; on 64-bit Linux all RAM is low memory.
    /// </summary>
    public long Dma32LimitBytes { get; init; } = Math.Min(SystemInfo.PhysicalMemoryBytes, 2L << 30);

    /// <summary>
    /// Bytes per store read when a buffer is restored: a restore interrupted by a failure or a cancellation keeps
    /// every batch it finished. Default 32 MiB: large sequential I/O, yet a restore can stop and resume part way.
    /// </summary>
    public long RestoreBatchBytes { get; init; } = 32L << 20;

    /// <summary>
    /// Let a touch of an absent page of a buffer's <see cref="PageArray.CpuAddress"/> populate the buffer through
    /// userfaultfd, as TTM's fault handler does. Off by default, because the thread that touches the page waits in
    /// the kernel until a handler thread has restored it: if that thread is running managed code, a garbage collection
    /// starting meanwhile waits for it while the handler waits for the collection, and the process hangs. Turn it on
    /// only where absent pages are touched from native code (P/Invoke, a device simulator in C), which the collector
    /// does not wait for. Off, absent pages are inaccessible: populate before using the pointer.
    /// </summary>
    public bool FaultInOnAccess { get; init; }

    internal void Validate()
    {
        if (PageLimitBytes < 0) throw new ArgumentOutOfRangeException(nameof(PageLimitBytes), PageLimitBytes, "The page limit cannot be negative.");
        if (Dma32LimitBytes < 0) throw new ArgumentOutOfRangeException(nameof(Dma32LimitBytes), Dma32LimitBytes, "The DMA32 limit cannot be negative.");
        if (RestoreBatchBytes < 4096) throw new ArgumentOutOfRangeException(nameof(RestoreBatchBytes), RestoreBatchBytes, "Restore at least one page per batch (4096 bytes).");
    }
}
