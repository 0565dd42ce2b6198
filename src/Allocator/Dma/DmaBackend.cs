using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Dma;

/// <summary>
/// The page allocator one backend (one device driver) uses, chosen per backend: a device whose streaming mappings
/// need neither syncs nor bouncing takes pages from the shared <see cref="PoolAllocator"/> and maps them; a device
/// that needs coherent memory (it bounces, or does not snoop caches) takes them from its own <see cref="DmaPagePool"/>,
/// where every page already has its DMA address and no sync is ever needed.
/// </summary>
public sealed class DmaBackend : IDisposable
{
    private readonly DmaDevice _device;
    private readonly PoolAllocator? _shared;
    private readonly DmaPagePool? _dmaPool;

    private DmaBackend(DmaDevice device, PoolAllocator? shared, DmaPagePool? dmaPool)
    {
        _device = device;
        _shared = shared;
        _dmaPool = dmaPool;
    }

    /// <summary>The shared pool for a device that maps streaming pages.</summary>
    public static DmaBackend ForStreaming(DmaDevice device, PoolAllocator shared)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(shared);
        if (shared.Memory != device.Platform.Memory)
            throw new ArgumentException($"Device '{device.Name}': the shared pool allocates from another memory space.", nameof(shared));
        return new DmaBackend(device, shared, null);
    }

    /// <summary>The device's own coherent DMA pool.</summary>
    public static DmaBackend ForCoherent(DmaDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return new DmaBackend(device, null, new DmaPagePool(device));
    }

    /// <summary>The shared pool when the device's streaming DMA is coherent (<see cref="DmaPlatform.IsStreamingCoherent"/>), else its DMA pool.</summary>
    public static DmaBackend Choose(DmaDevice device, PoolAllocator shared)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.Platform.IsStreamingCoherent(device) ? ForStreaming(device, shared) : ForCoherent(device);
    }

    /// <summary>True when pages come from the device's coherent DMA pool.</summary>
    public bool UsesDmaPool => _dmaPool is not null;

    /// <summary>A page the device can reach now, with its DMA address. The shared pool gives order-0 pages only.</summary>
    public DmaPage Allocate(CachingMode caching, int order = 0)
    {
        if (_dmaPool is not null) return _dmaPool.Allocate(caching, order);
        if (order != 0)
            throw new ArgumentOutOfRangeException(nameof(order), order, $"Device '{_device.Name}': the shared-pool backend hands out single pages (order 0).");
        var zone = _device.MaskBits <= 32 ? Zone.Dma32 : Zone.Normal;
        var block = _shared!.AllocatePage(caching, zone);
        try
        {
            ulong dma = _device.MapPage(block, 0, PhysicalMemory.PageSize, DmaDirection.Bidirectional);
            _device.MappingError(dma);
            return new DmaPage(block, dma, caching);
        }
        catch
        {
            _shared.ReleasePage(block, caching);
            throw;
        }
    }

    /// <summary>Give a page back where it came from.</summary>
    public void Free(DmaPage page)
    {
        if (_dmaPool is not null)
        {
            _dmaPool.Free(page);
            return;
        }
        _device.UnmapPage(page.DmaAddress, PhysicalMemory.PageSize, DmaDirection.Bidirectional);
        _shared!.ReleasePage(page.Block, page.Caching);
    }

    /// <summary>Release the DMA pool's pages (the shared pool belongs to its owner).</summary>
    public void Dispose() => _dmaPool?.Dispose();
}
