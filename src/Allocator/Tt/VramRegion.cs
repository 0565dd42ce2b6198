using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// Simulated device-local memory ("VRAM"): a memfd of a fixed size with its own range allocator (first fit over
/// free page ranges), as TTM's range manager hands out VRAM. Buffers moved here keep their contents here and their
/// stable CPU mapping points at it, as a BAR mapping would.
/// </summary>
public sealed unsafe class VramRegion : IDisposable
{
    private readonly Lock _lock = new();
    private readonly List<(long Page, long Pages)> _free = new();
    private readonly int _fd;
    private readonly byte* _view;
    private int _disposed;

    /// <summary>A region of <paramref name="bytes"/> (a multiple of 4 KiB).</summary>
    public VramRegion(long bytes)
    {
        if (bytes <= 0 || bytes % PhysicalMemory.PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "VRAM size must be a positive multiple of 4096 bytes.");
        Bytes = bytes;
        _fd = Libc.MemfdCreate("pagepool-vram", Libc.MFD_CLOEXEC);
        Libc.Ftruncate(_fd, bytes);
        _view = Libc.Mmap(null, (nuint)bytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, _fd, 0);
        _free.Add((0, bytes >> PhysicalMemory.PageShift));
    }

    /// <summary>The size of the region.</summary>
    public long Bytes { get; }

    /// <summary>Bytes not handed out.</summary>
    public long FreeBytes
    {
        get { lock (_lock) return _free.Sum(f => f.Pages) << PhysicalMemory.PageShift; }
    }

    internal int Fd => _fd;

    internal byte* At(long page) => _view + (page << PhysicalMemory.PageShift);

    /// <summary>First fit; -1 when no range of that many pages is free.</summary>
    internal long Allocate(long pages)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        lock (_lock)
        {
            for (int i = 0; i < _free.Count; i++)
            {
                var (p, n) = _free[i];
                if (n < pages) continue;
                if (n == pages) _free.RemoveAt(i);
                else _free[i] = (p + pages, n - pages);
                return p;
            }
            return -1;
        }
    }

    /// <summary>Give a range back, punched out so its memory returns, merged with free neighbours.</summary>
    internal void Free(long page, long pages)
    {
        if (_disposed != 0) return;
        Libc.Fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, page << PhysicalMemory.PageShift, pages << PhysicalMemory.PageShift);
        lock (_lock)
        {
            int i = 0;
            while (i < _free.Count && _free[i].Page < page) i++;
            _free.Insert(i, (page, pages));
            if (i + 1 < _free.Count && _free[i].Page + _free[i].Pages == _free[i + 1].Page)
            {
                _free[i] = (_free[i].Page, _free[i].Pages + _free[i + 1].Pages);
                _free.RemoveAt(i + 1);
            }
            if (i > 0 && _free[i - 1].Page + _free[i - 1].Pages == _free[i].Page)
            {
                _free[i - 1] = (_free[i - 1].Page, _free[i - 1].Pages + _free[i].Pages);
                _free.RemoveAt(i);
            }
        }
    }

    /// <summary>Unmap and close the region. Buffers still in it lose their contents.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Libc.Munmap(_view, (nuint)Bytes);
        Libc.Close(_fd);
    }
}
