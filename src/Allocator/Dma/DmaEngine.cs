using PagePool.Diagnostics;

namespace PagePool.Dma;

/// <summary>
/// The device's side of DMA: it reads and writes bytes only through DMA addresses, translated by the device's ops
/// (an IO page table walk behind an IOTLB for the IOMMU, the device's own windows otherwise). An address it holds
/// no mapping for is a DMA fault: recorded, counted and raised as <see cref="DmaFaultException"/>.
/// </summary>
public sealed unsafe class DmaEngine
{
    private readonly DmaDevice _device;
    private readonly DmaOps _ops;
    private readonly DmaChecker? _checker;
    private DmaFault? _lastFault;

    // A bouncing device's pool: an access into it is found by arithmetic, without the ops' general translation.
    private readonly Swiotlb? _bounce;

    internal DmaEngine(DmaDevice device, DmaOps ops, DmaChecker? checker)
    {
        _device = device;
        _ops = ops;
        _checker = checker;
        if (ops is DirectOps { NeverBounces: false }) _bounce = device.Platform.Swiotlb;
    }

    /// <summary>The last fault the device caused, if any.</summary>
    public DmaFault? LastFault => _lastFault;

    /// <summary>The device writes <paramref name="source"/> at <paramref name="dmaAddress"/>.</summary>
    public void Write(ulong dmaAddress, ReadOnlySpan<byte> source)
    {
        fixed (byte* src = source) Access(dmaAddress, src, source.Length, true);
        _checker?.OnDeviceWrite(_device, dmaAddress, source.Length);
    }

    /// <summary>The device reads <paramref name="destination"/>.Length bytes at <paramref name="dmaAddress"/>.</summary>
    public void Read(ulong dmaAddress, Span<byte> destination)
    {
        fixed (byte* dst = destination) Access(dmaAddress, dst, destination.Length, false);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private void Access(ulong dma, byte* data, int length, bool write)
    {
        _device.ThrowIfDisposed(); // a released device's tables are gone
        // A burst inside one bounce mapping of this device (what a bouncing device does): one copy. Anything else,
        // a fault included, takes the general path, which translates again and reports.
        int slot;
        if (_bounce is { } tlb && (slot = tlb.SlotOf(dma)) >= 0)
        {
            byte* host = tlb.DeviceView(slot, dma, _device.Id, out int room);
            if (host != null && room >= length)
            {
                if (write) BounceCopy.Copy(data, host, length);
                else BounceCopy.Copy(host, data, length);
                return;
            }
        }
        AccessTranslated(dma, data, length, write);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void AccessTranslated(ulong dma, byte* data, int length, bool write)
    {
        int done = 0;
        while (done < length)
        {
            ulong at = dma + (ulong)done;
            if (!_ops.Translate(at, write, out byte* host, out int room, out bool stale, out string? reason))
                throw Fault(at, write, reason!, false);
            int n = Math.Min(room, length - done);
            if (stale)
            {
                Interlocked.Increment(ref _device.StaleAccessCount);
                _checker?.OnStaleIotlb(_device, at, n, write); // the bytes that went through the stale entry
                if (PagePoolEventSource.DmaOn) PagePoolEventSource.Log.DmaFault(_device.Name, (long)at, write ? 1 : 0, 1);
            }
            if (write) BounceCopy.Copy(data + done, host, n);
            else BounceCopy.Copy(host, data + done, n);
            done += n;
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private DmaFaultException Fault(ulong at, bool write, string reason, bool stale)
    {
        var f = new DmaFault(_device.Name, at, write, reason);
        _lastFault = f;
        Interlocked.Increment(ref _device.FaultCount);
        if (PagePoolEventSource.DmaOn) PagePoolEventSource.Log.DmaFault(_device.Name, (long)at, write ? 1 : 0, stale ? 1 : 0);
        return new DmaFaultException(f);
    }
}
