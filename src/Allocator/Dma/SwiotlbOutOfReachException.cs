namespace PagePool.Dma;

/// <summary>
/// A bouncing device's DMA mask does not reach the swiotlb bounce pool: no slot lies below the mask, however empty
/// the pool is. Not a full pool (<see cref="SwiotlbFullException"/>): unmapping changes nothing; a wider mask does.
/// </summary>
public sealed class SwiotlbOutOfReachException : DmaMappingException
{
    /// <summary>The device's DMA mask in bits.</summary>
    public int MaskBits { get; }

    /// <summary>The lowest bus address of the bounce pool.</summary>
    public ulong PoolStart { get; }

    /// <summary>The bus address just past the bounce pool's highest slot.</summary>
    public ulong PoolEnd { get; }

    internal SwiotlbOutOfReachException(string device, int maskBits, int bytes, ulong poolStart, ulong poolEnd)
        : base(device, 0, $"Device '{device}': its {maskBits}-bit DMA mask (up to 0x{(maskBits >= 64 ? ulong.MaxValue : (1UL << maskBits) - 1):x}) " +
               $"does not reach the swiotlb bounce pool, which lies at bus 0x{poolStart:x}..0x{poolEnd - 1:x}: no bounce slot for " +
               $"{bytes} bytes can ever be below the mask, however empty the pool is. Give the device a wider DMA mask, or IOMMU ops.")
    {
        MaskBits = maskBits;
        PoolStart = poolStart;
        PoolEnd = poolEnd;
    }
}
