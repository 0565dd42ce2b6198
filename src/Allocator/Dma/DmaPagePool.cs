using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>
/// A device's coherent DMA pool, as TTM's pools with use_dma_alloc: pages come from coherent allocation
/// (<see cref="DmaDevice.AllocateCoherent"/>), are kept per caching mode x order, keep their DMA address while
/// pooled, and go back only to the pool and type they came from. Giving a page to the wrong pool, or in another
/// caching mode than it was taken in, is refused and reported to the checker (the wrong-pool free of a cached
/// DMA32 page made uncached behind the pool's back).
/// </summary>
/// <remarks>
/// Not a hot path (coherent allocation is the rare case TTM keeps these pools for); one lock per pool. Pages are
/// cleared when given back, as TTM clears on give, so every page taken reads zero.
/// </remarks>
public sealed unsafe class DmaPagePool : IDisposable
{
    private readonly DmaDevice _device;
    private readonly PhysicalMemory _memory;
    private readonly Lock _lock = new();
    private readonly Stack<DmaPage>[] _types = new Stack<DmaPage>[3 * (PhysicalMemory.MaxOrder + 1)];
    private readonly Dictionary<ulong, DmaPage> _out = new(); // handle value -> the page as handed out
    private bool _disposed;

    /// <summary>An empty pool for a device.</summary>
    public DmaPagePool(DmaDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        _device = device;
        _memory = device.Platform.Memory;
        for (int i = 0; i < _types.Length; i++) _types[i] = new Stack<DmaPage>();
    }

    /// <summary>The device the pool serves.</summary>
    public DmaDevice Device => _device;

    /// <summary>Pages sitting in the pool.</summary>
    public long PooledPages
    {
        get
        {
            lock (_lock)
            {
                long n = 0;
                for (int i = 0; i < _types.Length; i++) n += (long)_types[i].Count << (i % (PhysicalMemory.MaxOrder + 1));
                return n;
            }
        }
    }

    private static int TypeOf(CachingMode caching, int order) => (int)caching * (PhysicalMemory.MaxOrder + 1) + order;

    /// <summary>A zeroed block of 2^order pages in <paramref name="caching"/>, from the pool or a fresh coherent allocation.</summary>
    public DmaPage Allocate(CachingMode caching, int order)
    {
        if ((uint)order > PhysicalMemory.MaxOrder)
            throw new ArgumentOutOfRangeException(nameof(order), order, $"DMA pool of '{_device.Name}': order must be 0..{PhysicalMemory.MaxOrder}.");
        if (!Enum.IsDefined(caching))
            throw new ArgumentOutOfRangeException(nameof(caching), caching, $"DMA pool of '{_device.Name}': unknown caching mode.");
        if (caching == CachingMode.WriteBack && !_device.IsCoherent)
            throw new ArgumentException($"DMA pool of '{_device.Name}': the device does not snoop CPU caches, so write-back pages would not be coherent; ask for WriteCombined or Uncached.", nameof(caching));
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_types[TypeOf(caching, order)].TryPop(out var pooled))
            {
                _out.Add(pooled.Block.Value, pooled);
                return pooled;
            }
        }
        var c = _device.AllocateCoherent(order);
        try
        {
            if (_memory.CachingOf(c.Block) != caching) _memory.SetCaching(c.Block, caching);
        }
        catch
        {
            _device.FreeCoherent(c);
            throw;
        }
        var page = new DmaPage(c.Block, c.DmaAddress, caching);
        lock (_lock) _out.Add(page.Block.Value, page);
        return page;
    }

    /// <summary>Give a page back to the type it came from. Refused (and reported) when it came from elsewhere or changed caching.</summary>
    public void Free(DmaPage page)
    {
        DmaPage had = default;
        bool afterDispose;
        lock (_lock)
        {
            // After Dispose a page still out goes back to the system (the pool keeps nothing any more), never lost.
            afterDispose = _disposed;
            if (afterDispose && _out.TryGetValue(page.Block.Value, out var held) && held.DmaAddress == page.DmaAddress)
            {
                had = held;
                _out.Remove(page.Block.Value);
            }
            ObjectDisposedException.ThrowIf(afterDispose && had.Block.IsNull, this);
        }
        if (afterDispose)
        {
            _device.FreeCoherent(new DmaCoherentBlock(had.Block, had.DmaAddress));
            return;
        }
        lock (_lock)
        {
            if (!_out.TryGetValue(page.Block.Value, out had) || had.DmaAddress != page.DmaAddress)
                throw WrongPool(page, $"{page.Block} at DMA address 0x{page.DmaAddress:x} was not taken from the DMA pool of device '{_device.Name}'; give it back to the pool it came from");
        }
        var now = _memory.CachingOf(page.Block);
        if (now != had.Caching || page.Caching != had.Caching)
            throw WrongPool(page, $"{page.Block} was taken as {had.Caching} but is given back as {page.Caching} and is now {now}; " +
                                  $"set it back to {had.Caching} first, it would otherwise land in the wrong pool type");
        fixed (byte* p = _memory.GetSpan(page.Block))
            PhysicalMemory.ClearAs(now, p, (nuint)(page.Block.PageCount << PhysicalMemory.PageShift));
        lock (_lock)
        {
            _out.Remove(page.Block.Value);
            _types[TypeOf(had.Caching, page.Block.Order)].Push(had);
        }
    }

    private DmaMappingException WrongPool(DmaPage page, string detail)
    {
        _device.Platform.Checker?.OnWrongPool(_device, page.DmaAddress, (long)page.Block.PageCount << PhysicalMemory.PageShift, detail);
        return new DmaMappingException(_device.Name, page.DmaAddress, $"Wrong DMA pool: {detail}.");
    }

    /// <summary>
    /// Give every pooled page back to the system (coherent free). Pages still out stay with their holders; freed
    /// afterwards, they go to the system.
    /// </summary>
    public void Dispose()
    {
        List<DmaPage> pooled = new();
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var t in _types) { pooled.AddRange(t); t.Clear(); }
        }
        foreach (var p in pooled) _device.FreeCoherent(new DmaCoherentBlock(p.Block, p.DmaAddress)); // back to write-back there
    }
}
