using PagePool.Dma;
using PagePool.Memory;
using PagePool.Tt;

namespace PagePool.Allocator.Tests.Model;

// The page-array side of a run: lifecycle, CPU and device contents, binding to the run's DMA devices (and moving
// between them), swap, VRAM and the buffers' shrinker, each checked against TtModel.
public sealed partial class ModelRun
{
    private const int MaxTts = 24, VramPages = 96;
    // Small limits, so that populates evict least recently used arrays often and sometimes find nothing to evict.
    private const long TtPageLimit = 256, TtDma32PageLimit = 128;

    private readonly SwapStore _store;
    private readonly BufferAccounting _accounting;
    private readonly VramRegion _vram;
    private readonly TtModel _tts = new(TtPageLimit, TtDma32PageLimit, VramPages);
    private readonly Dictionary<int, PageArray> _arrays = new();

    // Three steps in four pick among the arrays in a state where the step is legal (when there is one), the fourth
    // among all: under tight limits most arrays are swapped out at any time, and legal paths need exercise too.
    // A move always picks a bound array: only those have a device to move from.
    private TtModel.Tt? Pick(ModelOp op)
    {
        Func<TtState, bool>? legal = op.Kind switch
        {
            ModelOpKind.TtPopulate => s => s is TtState.Unpopulated or TtState.SwappedOut,
            ModelOpKind.TtUnpopulate or ModelOpKind.TtPurge => s => s is TtState.Populated or TtState.SwappedOut,
            ModelOpKind.TtWrite or ModelOpKind.TtRead => s => s is TtState.Populated or TtState.Bound,
            ModelOpKind.TtSwapOut => s => s is TtState.Populated or TtState.SwappedOut or TtState.DeviceLocal,
            ModelOpKind.TtBind or ModelOpKind.TtToVram => s => s == TtState.Populated,
            ModelOpKind.TtUnbind or ModelOpKind.TtMove or ModelOpKind.TtDeviceWrite or ModelOpKind.TtDeviceRead => s => s == TtState.Bound,
            ModelOpKind.TtToSystem => s => s == TtState.DeviceLocal,
            _ => null,
        };
        var from = legal is not null && (op.Kind == ModelOpKind.TtMove || op.C % 4 != 0) ? _tts.Live.Where(t => legal(t.State)).ToList() : null;
        if (from is { Count: 0 } && op.Kind != ModelOpKind.TtMove) from = null;
        return Resolve(op, op.Pin == ModelOp.Unpinned ? from ?? _tts.Live : _tts.Live, t => t.Tag);
    }

    private string? TtStep(ModelOp op)
    {
        if (op.Kind == ModelOpKind.TtCreate)
        {
            if (_tts.Live.Count >= MaxTts) return Skip();
            var flags = ModelOp.TtFlagsOf(op.B);
            var created = _tts.Create(op.Tag, op.A, op.Caching, op.Zone, flags);
            _arrays[created.Id] = new PageArray(_accounting, op.A, op.Caching, op.Zone, flags);
            return null;
        }
        if (op.Kind == ModelOpKind.TtShrink)
        {
            long expected = _tts.Scan(op.A), freed = _accounting.Scan(op.A);
            return freed == expected ? null : $"the buffers' shrinker freed {freed} pages for {op.A} asked, the model {expected}";
        }
        if (Pick(op) is not { } t) return Skip();
        var a = _arrays[t.Id];
        var rng = new Random(op.C);
        switch (op.Kind)
        {
            case ModelOpKind.TtPopulate:
                return Expect(_tts.Populate(t), () => a.Populate(), $"populate of {t}");
            case ModelOpKind.TtUnpopulate:
                return Expect(_tts.Unpopulate(t), a.Unpopulate, $"unpopulate of {t}");
            case ModelOpKind.TtPurge:
                return Expect(_tts.Unpopulate(t), a.Purge, $"purge of {t}");
            case ModelOpKind.TtWrite:
            {
                var (offset, length) = RangeIn(t, rng);
                var data = new byte[length];
                rng.NextBytes(data);
                string what = $"a write of [{offset}, +{length}) to {t}";
                var expected = _tts.Access(t, offset, length, write: true);
                if (Expect(expected, () => a.Write(offset, data), what) is { } f) return f;
                if (expected is null) TtModel.Store(t, offset, data);
                return null;
            }
            case ModelOpKind.TtRead:
            {
                var (offset, length) = RangeIn(t, rng);
                var data = new byte[length];
                string what = $"a read of [{offset}, +{length}) of {t}";
                var expected = _tts.Access(t, offset, length, write: false);
                if (Expect(expected, () => a.Read(offset, data), what) is { } f) return f;
                return expected is null ? CompareKnown(t, offset, data, what) : null;
            }
            case ModelOpKind.TtSwapOut:
            {
                long max = op.B < 0 ? long.MaxValue : op.B;
                long swapped = 0;
                var expected = _tts.SwapOutCheck(t, max);
                if (Expect(expected, () => swapped = a.SwapOut(max), $"swap-out of at most {max} pages of {t}") is { } f) return f;
                if (expected is not null) return null;
                // Which blocks fit is the array's layout; the model asks what any layout must give.
                long resident = t.Resident;
                if (swapped < 0 || swapped > Math.Min(max, resident) || (max >= resident && swapped != resident))
                    return $"swap-out of at most {max} pages of {t} with {resident} resident swapped {swapped}";
                _tts.SwapOutApply(t, swapped);
                return null;
            }
            case ModelOpKind.TtBind:
                return Bind(t, a, op.B % ModelDevices.Bindable);
            case ModelOpKind.TtUnbind:
                return Unbind(t, a);
            case ModelOpKind.TtMove:
                // Move between devices: off the one it is bound to, onto another (a 32-bit one copies 64-bit pages down).
                return Unbind(t, a) ?? Bind(t, a, (t.Device + 1 + op.B % (ModelDevices.Bindable - 1)) % ModelDevices.Bindable);
            case ModelOpKind.TtToVram:
                return Expect(_tts.ToVram(t), () => a.MoveToVram(_vram), $"move to VRAM of {t}");
            case ModelOpKind.TtToSystem:
                return Expect(_tts.ToSystem(t), a.MoveToSystem, $"move to system memory of {t}");
            case ModelOpKind.TtDeviceWrite:
            case ModelOpKind.TtDeviceRead:
                return DeviceAccess(t, a, rng, op.Kind == ModelOpKind.TtDeviceWrite);
            case ModelOpKind.TtDestroy:
                return Destroy(t);
            default:
                return $"unknown step {op.Kind}";
        }
    }

    // A byte range of the array: a quarter of the time all of it (so unknown pages become known), now and then one
    // that runs past its end (refused), otherwise up to three pages somewhere.
    private static (long Offset, int Length) RangeIn(TtModel.Tt t, Random rng)
    {
        long bytes = (long)t.Pages * PhysicalMemory.PageSize;
        int kind = rng.Next(16);
        if (kind < 4) return (0, (int)bytes);
        long offset = rng.NextInt64(bytes);
        int length = 1 + rng.Next((int)Math.Min(bytes - offset, 3 * PhysicalMemory.PageSize));
        if (kind == 4) return (bytes - length + 1 + rng.Next(100), length);
        if (kind == 5) return (-1 - rng.Next(100), length);
        return (offset, length);
    }

    // Bind through the DMA layer: the array maps its pages as one scatterlist on the device (a 64-bit array bound to a
    // 32-bit dma-direct device is copied to DMA32 first); the device then holds each page's DMA address.
    private string? Bind(TtModel.Tt t, PageArray a, int device)
    {
        var d = _devices[device];
        var expected = _tts.Bind(t, device, reachesNormal: d.OpsKind == DmaOpsKind.Iommu || d.MaskBits == 64, out bool copied);
        bool realCopied = false;
        if (Expect(expected, () => realCopied = a.Bind(d), $"bind of {t} to {d.Name}") is { } f) return f;
        if (expected is not null) return null;
        if (realCopied != copied) return $"bind of {t} to {d.Name} {(realCopied ? "copied" : "did not copy")} the pages; the model {(copied ? "did" : "did not")}";
        if (copied) _tally.CopiesToDma32++;
        for (int p = 0; p < t.Pages; p++) _dma.Devices[device].Add(a.DmaAddress(p), PhysicalMemory.PageSize, t);
        return null;
    }

    private string? Unbind(TtModel.Tt t, PageArray a)
    {
        int device = t.Device;
        var expected = _tts.Unbind(t);
        if (Expect(expected, a.Unbind, $"unbind of {t}") is { } f) return f;
        if (expected is null) _dma.Devices[device].Retire(t);
        return null;
    }

    private string? Destroy(TtModel.Tt t)
    {
        int device = t.Device;
        _tts.Destroy(t);
        _arrays.Remove(t.Id, out var a);
        a!.Dispose();
        if (device >= 0) _dma.Devices[device].Retire(t);
        return null;
    }

    // The bound device reads or writes the array through its DMA addresses, page by page (consecutive pages need not
    // have consecutive addresses). An array that is not bound has no DMA address to give.
    private string? DeviceAccess(TtModel.Tt t, PageArray a, Random rng, bool write)
    {
        if (t.State != TtState.Bound)
            return Expect(typeof(TtStateException), () => a.DmaAddress(0), $"the DMA address of {t}");
        long bytes = (long)t.Pages * PhysicalMemory.PageSize;
        long offset = rng.NextInt64(bytes);
        int length = 1 + rng.Next((int)Math.Min(bytes - offset, 3 * PhysicalMemory.PageSize));
        var data = new byte[length];
        if (write) rng.NextBytes(data);
        var dev = _dma.Devices[t.Device];
        var engine = _devices[t.Device].Engine;
        for (int done = 0; done < length;)
        {
            long at = offset + done;
            int page = (int)(at / PhysicalMemory.PageSize), inPage = (int)(at % PhysicalMemory.PageSize);
            int n = Math.Min(length - done, PhysicalMemory.PageSize - inPage);
            ulong dma = a.DmaAddress(page) + (ulong)inPage;
            if (!dev.Reaches(dma)) return $"{t} gives DMA address 0x{dma:x} for page {page}, which none of its bound ranges on {_devices[t.Device].Name} holds";
            var chunk = data.AsSpan(done, n);
            _tally.DeviceBytes += n;
            if (write) engine.Write(dma, chunk);
            else engine.Read(dma, chunk);
            done += n;
        }
        if (write)
        {
            TtModel.Store(t, offset, data);
            return null;
        }
        return CompareKnown(t, offset, data, $"a device read of [{offset}, +{length}) of {t}");
    }

    // Compare what was read at [offset, +data.Length) with the model, on the pages whose contents the model knows.
    private static string? CompareKnown(TtModel.Tt t, long offset, ReadOnlySpan<byte> data, string what)
    {
        for (int i = 0; i < data.Length;)
        {
            long at = offset + i;
            int page = (int)(at / PhysicalMemory.PageSize);
            int n = (int)Math.Min(data.Length - i, (page + 1L) * PhysicalMemory.PageSize - at);
            if (t.Known[page])
            {
                var expected = t.Bytes.AsSpan((int)at, n);
                int diff = expected.CommonPrefixLength(data.Slice(i, n));
                if (diff != n) return $"{what}: byte {at + diff} is {data[i + diff]:x2}, the model {expected[diff]:x2}";
            }
            i += n;
        }
        return null;
    }

    // All of an array whose pages are all resident, read through the API (which counts as a use: the model is told).
    private string? CompareArray(TtModel.Tt t, string when)
    {
        if (t.State is not (TtState.Populated or TtState.Bound)) return null;
        var data = new byte[(long)t.Pages * PhysicalMemory.PageSize];
        _tts.Access(t, 0, data.Length, write: false);
        _arrays[t.Id].Read(0, data);
        return CompareKnown(t, 0, data, $"{t} {when}");
    }

    // After every step: each array's state, store pages, zone and device; the accounting's counts, LRU order and
    // evictions; the store's bytes; VRAM. On an audit, every resident array's contents.
    private string? CheckArrays(bool audit)
    {
        foreach (var t in _tts.Live)
        {
            var a = _arrays[t.Id];
            if (a.State != t.State || a.SwappedPages != t.Swapped || a.Zone != t.Zone)
                return $"the array is {a.State} with {a.SwappedPages} pages swapped in {a.Zone}; the model has {t}";
            if (a.BoundDevice != (t.Device < 0 ? null : _devices[t.Device]))
                return $"{t} is bound to {a.BoundDevice?.Name ?? "nothing"}, the model says {(t.Device < 0 ? "nothing" : _devices[t.Device].Name)}";
        }
        if (_accounting.Pages != _tts.Charged || _accounting.Dma32Pages != _tts.Dma32Charged)
            return $"the accounting charges {_accounting.Pages} pages ({_accounting.Dma32Pages} DMA32), the model {_tts.Charged} ({_tts.Dma32Charged})";
        if (_accounting.Evictions != _tts.Evictions) return $"the accounting made {_accounting.Evictions} evictions, the model {_tts.Evictions}";
        var lru = _accounting.LruSnapshot();
        if (!lru.SequenceEqual(_tts.Lru.Select(t => _arrays[t.Id])))
            return $"the LRU is [{string.Join(", ", lru.Select(a => _tts.Live.First(t => _arrays[t.Id] == a).Id))}], the model [{string.Join(", ", _tts.Lru.Select(t => t.Id))}]";
        if (_store.BytesInUse != _tts.SwappedPages * PhysicalMemory.PageSize)
            return $"the store holds {_store.BytesInUse} bytes, the model {_tts.SwappedPages} pages";
        if (_vram.FreeBytes != _tts.VramFreePages * PhysicalMemory.PageSize)
            return $"VRAM has {_vram.FreeBytes} bytes free, the model {_tts.VramFreePages} pages";
        if (audit)
            foreach (var t in _tts.Live)
                if (CompareArray(t, "on an audit") is { } f) return f;
        return null;
    }
}
