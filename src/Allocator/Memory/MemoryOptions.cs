namespace PagePool.Memory;

/// <summary>How the emulated physical memory is laid out.</summary>
public sealed class MemoryOptions
{
    /// <summary>Bytes per arena (one memfd mapped twice); a multiple of 2 MiB, at most 256 MiB. Default 64 MiB.</summary>
    public long ArenaBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Capacity of the DMA32 zone (frames below 4 GiB). Default 2 GiB, the min(low memory, 2 GiB) Linux TTM uses
    /// for its DMA32 page limit; set it small to make exhaustion testable.
    /// </summary>
    public long Dma32Bytes { get; init; } = 2L << 30;

    /// <summary>Capacity of the normal zone (frames at or above 4 GiB). Default: the machine's RAM.</summary>
    public long NormalBytes { get; init; } = SystemInfo.PhysicalMemoryBytes;

    /// <summary>
    /// Emulate a Xen guest: pseudo-physical frames backed by scattered machine frames, so a DMA32 page is below
    /// 4 GiB only in the guest's view and a 32-bit device needs bouncing or a contiguous exchange.
    /// </summary>
    // The swiotlb-under-Xen problem of shared/seeds/002.
    public bool Xen { get; init; }

    /// <summary>Seed of the Xen P2M scramble; the same seed gives the same layout.</summary>
    public ulong XenSeed { get; init; } = 0x5EED;

    internal void Validate()
    {
        if (ArenaBytes < 2L << 20 || ArenaBytes > 256L << 20 || ArenaBytes % (2L << 20) != 0)
            throw new ArgumentOutOfRangeException(nameof(ArenaBytes), ArenaBytes, "ArenaBytes must be a multiple of 2 MiB between 2 MiB and 256 MiB.");
        if (Dma32Bytes < 0 || Dma32Bytes > (4L << 30) - (16L << 20))
            throw new ArgumentOutOfRangeException(nameof(Dma32Bytes), Dma32Bytes, "Dma32Bytes must be between 0 and 4 GiB less the 16 MiB of ZONE_DMA.");
        if (NormalBytes < 0)
            throw new ArgumentOutOfRangeException(nameof(NormalBytes), NormalBytes, "NormalBytes cannot be negative.");
    }
}
