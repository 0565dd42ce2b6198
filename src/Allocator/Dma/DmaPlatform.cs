using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>
/// The DMA side of a machine built on one <see cref="PhysicalMemory"/>: its devices, the swiotlb bounce pool they
/// share, the IOTLB invalidation policy, and (when enabled) the checker that watches every mapping.
/// </summary>
public sealed class DmaPlatform : IDisposable
{
    private readonly Lock _lock = new();
    private readonly List<DmaDevice> _devices = new();
    private Swiotlb? _swiotlb;
    private int _nextId;
    private int _disposed;

    /// <summary>A platform over <paramref name="memory"/>; nothing is allocated until a device needs it.</summary>
    public DmaPlatform(PhysicalMemory memory, DmaPlatformOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        Memory = memory;
        Options = options ?? new DmaPlatformOptions();
        Options.Validate();
        Checker = Options.Checker ? new DmaChecker(memory) : null;
    }

    /// <summary>The memory devices reach.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>The options the platform was built with.</summary>
    public DmaPlatformOptions Options { get; }

    /// <summary>The checker, or null when <see cref="DmaPlatformOptions.Checker"/> is off.</summary>
    public DmaChecker? Checker { get; }

    /// <summary>Create a device; its ops kind is fixed for its life.</summary>
    public DmaDevice CreateDevice(DmaDeviceOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (Volatile.Read(ref _disposed) != 0) throw new ObjectDisposedException(nameof(DmaPlatform));
        options.Validate();
        if (options.OpsKind is DmaOpsKind.Swiotlb or DmaOpsKind.Xen) _ = Swiotlb; // take the bounce pool now, not mid-mapping
        var d = new DmaDevice(this, options, Interlocked.Increment(ref _nextId));
        lock (_lock) _devices.Add(d);
        return d;
    }

    internal void Forget(DmaDevice d)
    {
        lock (_lock) _devices.Remove(d);
    }

    /// <summary>
    /// dma_streaming_is_coherent: true when the streaming API needs no sync calls for this device at all: it snoops
    /// the caches and its ops never bounce. A driver can then skip syncs, or decide not to load.
    /// </summary>
    public bool IsStreamingCoherent(DmaDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.IsCoherent && device.Ops.NeverBounces;
    }

    /// <summary>Bytes of the swiotlb pool in use now (0 before any device needed it).</summary>
    public long SwiotlbUsedBytes => _swiotlb?.UsedBytes ?? 0;

    internal Swiotlb Swiotlb
    {
        get
        {
            if (_swiotlb is { } s) return s;
            lock (_lock) return _swiotlb ??= new Swiotlb(Memory, Options.SwiotlbBytes, Environment.ProcessorCount);
        }
    }

    /// <summary>
    /// A CPU read of a held block, told to the checker: reading a bounced buffer the device wrote without
    /// sync_for_cpu is reported (the read still returns what the CPU's memory holds: the old data).
    /// </summary>
    public void CpuRead(PageHandle block, int offset, Span<byte> destination)
    {
        Checker?.OnCpuRead(block, offset, destination.Length);
        Memory.Read(block, offset, destination);
    }

    /// <summary>
    /// The cached linear alias of a held block (see <see cref="PhysicalMemory.GetAliasSpan"/>); use of the alias of a
    /// write-combined or uncached block is reported to the checker before the <see cref="DoubleMappingException"/> is raised.
    /// </summary>
    public Span<byte> GetAliasSpan(PageHandle block)
    {
        try
        {
            return Memory.GetAliasSpan(block);
        }
        catch (DoubleMappingException e)
        {
            Checker?.OnAlias(null, block, e.Caching);
            throw;
        }
    }

    /// <summary>Release every device still open (the checker reports their pending mappings) and the swiotlb pool.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        DmaDevice[] open;
        lock (_lock) open = _devices.ToArray();
        foreach (var d in open) d.Dispose();
        _swiotlb?.Dispose();
    }
}
