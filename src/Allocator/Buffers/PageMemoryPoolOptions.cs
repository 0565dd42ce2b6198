using PagePool.Memory;

namespace PagePool.Buffers;

/// <summary>How a <see cref="PageMemoryPool"/> rents its blocks.</summary>
public sealed class PageMemoryPoolOptions
{
    /// <summary>
    /// The caching mode of every block the pool rents. Default <see cref="CachingMode.WriteBack"/>: ordinary cached
    /// memory, what Pipelines and sockets expect. A write-combined or uncached pool hands out the block's view;
    /// stores through a <see cref="Span{T}"/> are plain stores, so use such a pool for buffers a device reads and the
    /// CPU fills once.
    /// </summary>
    public CachingMode Caching { get; init; } = CachingMode.WriteBack;

    /// <summary>The zone blocks come from. Default <see cref="Zone.Normal"/>; <see cref="Zone.Dma32"/> for buffers a 32-bit device reads.</summary>
    public Zone Zone { get; init; } = Zone.Normal;

    /// <summary>
    /// Whether a rented buffer reads zero. Default false, as <see cref="System.Buffers.MemoryPool{T}.Shared"/>:
    /// a rented buffer may hold what its previous renter wrote, and the pool saves the clear. When true, a block
    /// is cleared as it is handed out (or was cleared when given back, under <see cref="Pool.ZeroPolicy.OnRelease"/>).
    /// </summary>
    public bool ClearBuffers { get; init; }

    internal void Validate()
    {
        if (!Enum.IsDefined(Caching))
            throw new ArgumentOutOfRangeException(nameof(Caching), Caching, "Unknown caching mode.");
        if (!Enum.IsDefined(Zone))
            throw new ArgumentOutOfRangeException(nameof(Zone), Zone, "Unknown zone.");
    }
}
