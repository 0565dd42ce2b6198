namespace PagePool.Dma;

/// <summary>The swiotlb bounce pool has no run of free slots for a mapping.</summary>
public sealed class SwiotlbFullException : DmaMappingException
{
    /// <summary>Bytes the mapping needed.</summary>
    public int Bytes { get; }

    /// <summary>Bytes of the pool in use.</summary>
    public long UsedBytes { get; }

    /// <summary>Bytes of the whole pool.</summary>
    public long PoolBytes { get; }

    internal SwiotlbFullException(string device, int bytes, long usedBytes, long poolBytes)
        : base(device, 0, $"Device '{device}': the swiotlb bounce pool has no room for {bytes} bytes ({usedBytes >> 10} of " +
               $"{poolBytes >> 10} KiB in use). Unmap bounced buffers sooner, or configure a larger SwiotlbBytes.")
    {
        Bytes = bytes;
        UsedBytes = usedBytes;
        PoolBytes = poolBytes;
    }
}
