namespace PagePool.Dma;

/// <summary>What a device is: its name, how far it can address, whether it snoops the CPU caches, and its ops.</summary>
public sealed class DmaDeviceOptions
{
    /// <summary>A name for messages and reports. Required.</summary>
    public required string Name { get; init; }

    /// <summary>Address bits the device can drive (dma_set_mask): 12..64. Default 64.</summary>
    public int MaskBits { get; init; } = 64;

    /// <summary>True when the device snoops CPU caches; false makes every ops kind do cache maintenance. Default true.</summary>
    public bool Coherent { get; init; } = true;

    /// <summary>Largest merged scatterlist segment in bytes (dma_set_max_seg_size). Default 64 KiB, as Linux.</summary>
    public int MaxSegmentSize { get; init; } = 64 << 10;

    /// <summary>A merged segment may not cross a multiple of (this + 1) (dma_set_seg_boundary). Default 4 GiB - 1, as Linux.</summary>
    public ulong SegmentBoundaryMask { get; init; } = uint.MaxValue;

    /// <summary>How DMA addresses are made for this device.</summary>
    public DmaOpsKind OpsKind { get; init; } = DmaOpsKind.Direct;

    /// <summary>The device's DMA mask.</summary>
    public ulong Mask => MaskBits >= 64 ? ulong.MaxValue : (1UL << MaskBits) - 1;

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name))
            throw new ArgumentException("A device needs a name.", nameof(Name));
        if (MaskBits < 12 || MaskBits > 64)
            throw new ArgumentOutOfRangeException(nameof(MaskBits), MaskBits, $"Device '{Name}': the DMA mask must be 12..64 bits.");
        if (MaxSegmentSize < 4096)
            throw new ArgumentOutOfRangeException(nameof(MaxSegmentSize), MaxSegmentSize, $"Device '{Name}': the max segment size must be at least one page (4096).");
        if (SegmentBoundaryMask < 4095 || ((SegmentBoundaryMask + 1) & SegmentBoundaryMask) != 0)
            throw new ArgumentOutOfRangeException(nameof(SegmentBoundaryMask), SegmentBoundaryMask, $"Device '{Name}': the segment boundary mask must be 2^n - 1 and at least 4095.");
        if (!Enum.IsDefined(OpsKind))
            throw new ArgumentOutOfRangeException(nameof(OpsKind), OpsKind, $"Device '{Name}': unknown ops kind.");
    }
}
