namespace PagePool.Memory;

/// <summary>How the emulated physical memory is laid out.</summary>
public sealed class MemoryOptions
{
    /// <summary>Bytes per arena (one memfd mapped twice); a multiple of 2 MiB, at most 256 MiB. Default 64 MiB.</summary>
    public long ArenaBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Capacity of the DMA32 zone (frames below 4 GiB). Default 2 GiB, the min(low memory, 2 GiB) Linux TTM uses
    /// for its DMA32 page limit; set it small to make exhaustion testable. Rounded down to whole arenas.
    /// </summary>
    public long Dma32Bytes { get; init; } = 2L << 30;

    /// <summary>
    /// Capacity of the normal zone (frames at or above 4 GiB). Default: the machine's RAM, or as much of it as the
    /// space can lay out. A space holds at most <see cref="MaxArenas"/> arenas in both zones, so a value set here must
    /// fit in what the DMA32 zone leaves (an error otherwise, never a silent cap). Like <see cref="Dma32Bytes"/> it
    /// is rounded down to whole arenas; <see cref="PhysicalMemory.Capacity"/> says what a zone got.
    /// </summary>
    public long NormalBytes
    {
        get => _normalBytes ?? Math.Min(SystemInfo.PhysicalMemoryBytes, (MaxArenas - Dma32Bytes / ArenaBytes) * ArenaBytes);
        init => _normalBytes = value;
    }

    private readonly long? _normalBytes;

    /// <summary>The most arenas one memory space lays out (the arena field of a handle).</summary>
    public const int MaxArenas = 1 << PageHandle.ArenaBits;

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
        long room = (MaxArenas - Dma32Bytes / ArenaBytes) * ArenaBytes;
        if (NormalBytes / ArenaBytes * ArenaBytes > room)
            throw new ArgumentOutOfRangeException(nameof(NormalBytes), NormalBytes,
                $"NormalBytes can be at most {room} bytes with {ArenaBytes}-byte arenas: a space holds {MaxArenas} arenas, and the DMA32 zone takes {Dma32Bytes / ArenaBytes} of them. Use larger arenas for more.");
    }
}
