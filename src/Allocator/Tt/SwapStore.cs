using PagePool.Faults;
using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// Where swapped-out buffer pages go (TTM's shmem backup). Space is handed out in extents of whole pages; an extent
/// given back is reused by the next swap-out. The memfd store punches it out at once (it is memory); the file store
/// keeps a bounded amount of freed disk space allocated, as Linux keeps freed swap slots, so the next swap-out
/// overwrites blocks in place.
/// </summary>
/// <remarks>
/// Two stores exist. <see cref="CreateFile"/>, the default, writes to an unlinked file on disk with large vectored
/// I/O that bypasses the page cache (O_DIRECT, or fdatasync + POSIX_FADV_DONTNEED where O_DIRECT is refused), so
/// swapped bytes really leave memory: without system swap a shmem file would stay in RAM and stay charged to the
/// memory cgroup. <see cref="CreateMemfd"/> is that shmem file: faster, but it frees nothing.
/// </remarks>
public abstract unsafe partial class SwapStore : IDisposable
{
    private readonly Lock _lock = new();
    private readonly List<(long Offset, long Length)> _free = new(); // sorted by offset, coalesced
    private long _end, _highWater, _inUse, _written, _read, _writeTicks, _readTicks;
    private int _disposed;

    private protected SwapStore() { }

    /// <summary>A store in an unlinked file under <paramref name="directory"/> (default: the system temp folder).</summary>
    /// <exception cref="SwapStoreException">The folder is missing or no file can be created in it.</exception>
    public static SwapStore CreateFile(string? directory = null) => new FileSwapStore(directory ?? Path.GetTempPath());

    /// <summary>A store in a memfd: shmem, fast, but its pages stay in RAM and in the memory cgroup.</summary>
    public static SwapStore CreateMemfd() => new MemfdSwapStore();

    /// <summary>What and where the store is, for messages and summaries.</summary>
    public abstract string Description { get; }

    /// <summary>True when bytes written here leave memory (a file on a disk, read and written past the page cache).</summary>
    public abstract bool ReleasesMemory { get; }

    /// <summary>Faults to inject into the next writes or reads.</summary>
    public SwapFaults Faults { get; } = new();

    /// <summary>Bytes of swapped-out pages held now.</summary>
    public long BytesInUse => Volatile.Read(ref _inUse);

    /// <summary>Bytes written since the store was made.</summary>
    public long BytesWritten => Volatile.Read(ref _written);

    /// <summary>Bytes read back since the store was made.</summary>
    public long BytesRead => Volatile.Read(ref _read);

    /// <summary>Time spent in store writes (the I/O itself, summed over threads).</summary>
    public TimeSpan WriteTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, Volatile.Read(ref _writeTicks));

    /// <summary>Time spent in store reads (the I/O itself, summed over threads).</summary>
    public TimeSpan ReadTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, Volatile.Read(ref _readTicks));

    /// <summary>
    /// Reserve an extent to be written part by part with <see cref="WritePart"/>; the caller gives back with
    /// <see cref="Free"/> whatever it does not keep.
    /// </summary>
    internal long ReserveExtent(long bytes)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return Reserve(bytes);
    }

    /// <summary>Write part of a reserved extent. A failure is a typed error and frees nothing: the extent is the caller's.</summary>
    internal void WritePart(long offset, Span<IoVec> vectors, long bytes)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (Faults.TakeWriteFault())
            throw new SwapStoreException("write", bytes, Description, "an injected write fault (SwapFaults.FailWrites).");
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            if (FaultInjector.ShouldFail(FaultPoint.SwapDiskFull)) throw NativeCallException.Injected("pwritev", Errno.ENOSPC, Description);
            if (FaultInjector.ShouldFail(FaultPoint.SwapWrite)) throw NativeCallException.Injected("pwritev", Errno.EIO, Description);
            WriteAt(offset, vectors, bytes);
        }
        catch (NativeCallException e)
        {
            throw new SwapStoreException("write", bytes, Description, e.Message, e);
        }
        Interlocked.Add(ref _writeTicks, System.Diagnostics.Stopwatch.GetTimestamp() - t0);
        Interlocked.Add(ref _written, bytes);
    }

    /// <summary>Read an extent (or part of one) into the scatter list. The extent stays reserved.</summary>
    internal void Read(long offset, Span<IoVec> vectors, long bytes, bool continues = false)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (Faults.TakeReadFault())
            throw new SwapStoreException("read", bytes, Description, "an injected read fault (SwapFaults.FailReads).");
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            if (FaultInjector.ShouldFail(FaultPoint.SwapRead)) throw NativeCallException.Injected("preadv", Errno.EIO, Description);
            ReadAt(offset, vectors, bytes, continues);
        }
        catch (NativeCallException e)
        {
            throw new SwapStoreException("read", bytes, Description, e.Message, e);
        }
        Interlocked.Add(ref _readTicks, System.Diagnostics.Stopwatch.GetTimestamp() - t0);
        Interlocked.Add(ref _read, bytes);
    }

    /// <summary>
    /// Give back part or all of an extent for reuse. Its bytes are punched out of the file unless the store keeps
    /// freed space (see <see cref="KeptFreeBytes"/>).
    /// </summary>
    internal void Free(long offset, long bytes)
    {
        if (_disposed != 0) return; // the file is gone and took every extent with it
        bool punch;
        lock (_lock) punch = _highWater - (_inUse - bytes) > KeptFreeBytes;
        // Best effort: callers free in the middle of a roll back or a restore and must not stop half way; a refused
        // punch only leaves the bytes allocated, and the extent is reused all the same.
        if (punch)
        {
            try { Discard(offset, bytes); }
            catch (NativeCallException) { }
        }
        lock (_lock)
        {
            int i = 0;
            while (i < _free.Count && _free[i].Offset < offset) i++;
            _free.Insert(i, (offset, bytes));
            // Merge with the next, then with the previous neighbour.
            if (i + 1 < _free.Count && _free[i].Offset + _free[i].Length == _free[i + 1].Offset)
            {
                _free[i] = (_free[i].Offset, _free[i].Length + _free[i + 1].Length);
                _free.RemoveAt(i + 1);
            }
            if (i > 0 && _free[i - 1].Offset + _free[i - 1].Length == _free[i].Offset)
            {
                _free[i - 1] = (_free[i - 1].Offset, _free[i - 1].Length + _free[i].Length);
                _free.RemoveAt(i);
            }
            if (_free[^1].Offset + _free[^1].Length == _end)
            {
                _end = _free[^1].Offset; // the tail is free: the file end moves back
                _free.RemoveAt(_free.Count - 1);
            }
            _inUse -= bytes;
        }
    }

    // First fit over the free extents, else the end of the file: swap-outs stay sequential on a fresh store.
    private long Reserve(long bytes)
    {
        lock (_lock)
        {
            _inUse += bytes;
            for (int i = 0; i < _free.Count; i++)
            {
                var (o, l) = _free[i];
                if (l < bytes) continue;
                if (l == bytes) _free.RemoveAt(i);
                else _free[i] = (o + bytes, l - bytes);
                return o;
            }
            long at = _end;
            _end += bytes;
            _highWater = Math.Max(_highWater, _end);
            return at;
        }
    }

    /// <summary>
    /// Freed bytes the store may keep allocated for the next swap-out instead of punching them out at once. Every
    /// free that would leave more free space than this (counting space already punched) punches, so the unpunched
    /// free space stays within it.
    /// </summary>
    private protected abstract long KeptFreeBytes { get; }

    /// <summary>Bytes the store's file holds allocated now (its st_blocks): what it costs the disk or the memory.</summary>
    internal abstract long AllocatedBytes { get; }

    private protected static long AllocatedBytesOf(int fd)
    {
        // struct stat: st_blocks (512-byte units) is at offset 64 on x86-64 and on the generic layout of arm64.
        long* stat = stackalloc long[32];
        if (fstat(fd, stat) != 0) throw NativeCallException.FromErrno("fstat", $"fd {fd}");
        return stat[8] * 512;
    }

    [System.Runtime.InteropServices.LibraryImport("libc", SetLastError = true)]
    private static partial int fstat(int fd, long* stat);

    private protected abstract void WriteAt(long offset, Span<IoVec> vectors, long bytes);
    /// <summary>Read into the scatter list; <paramref name="continues"/>: the caller reads on from the end next (readahead past it is welcome).</summary>
    private protected abstract void ReadAt(long offset, Span<IoVec> vectors, long bytes, bool continues);
    private protected abstract void Discard(long offset, long bytes);
    private protected abstract void Close();

    /// <summary>Close the store; everything in it is gone.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Close();
        GC.SuppressFinalize(this);
    }
}
