namespace PagePool.Pool;

/// <summary>How a <see cref="PoolAllocator"/> behaves.</summary>
public sealed class PoolOptions
{
    /// <summary>
    /// Pages the pool may keep, in bytes, before it returns the excess to the system. Default: half of RAM
    /// (TTM's page_pool_size). Every pooled page counts, per-core magazines included; what other threads hold in their
    /// CPU caches at the moment of a trim may stay above it, under 1 MiB per CPU (see README, Reclaim). 0 keeps nothing.
    /// </summary>
    public long LimitBytes { get; init; } = SystemInfo.PhysicalMemoryBytes / 2;

    /// <summary>
    /// Keep write-back pages too. Linux gives cached pages straight back to the kernel, which is cheap there;
    /// here a fresh page costs an mmap-class fault, so keeping them is the default. Measured by 'pagepool bench'.
    /// </summary>
    public bool PoolWriteBack { get; init; } = true;

    /// <summary>Where pages are cleared.</summary>
    public ZeroPolicy Zeroing { get; init; } = ZeroPolicy.OnAllocate;

    /// <summary>4 KiB pages per magazine at order 0; higher orders hold proportionally fewer blocks (at least one).</summary>
    public int MagazinePages { get; init; } = 64;

    internal void Validate()
    {
        if (LimitBytes < 0) throw new ArgumentOutOfRangeException(nameof(LimitBytes), LimitBytes, "The pool limit cannot be negative.");
        if (MagazinePages < 1 || MagazinePages > 4096)
            throw new ArgumentOutOfRangeException(nameof(MagazinePages), MagazinePages, "MagazinePages must be 1..4096.");
        if (!Enum.IsDefined(Zeroing)) throw new ArgumentOutOfRangeException(nameof(Zeroing), Zeroing, "Unknown zero policy.");
    }
}
