using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// The swap store that frees memory: an unlinked file (O_TMPFILE) written and read with vectored I/O straight from
/// and into the buffer's pages. With O_DIRECT the page cache never holds the bytes; where the file system refuses
/// O_DIRECT, each write is followed by fdatasync and POSIX_FADV_DONTNEED (the page cache can only drop clean pages)
/// and each read by POSIX_FADV_DONTNEED.
/// </summary>
internal sealed unsafe class FileSwapStore : SwapStore
{
    private readonly int _fd;
    private readonly bool _direct, _onTmpfs;
    private readonly string _where;

    internal FileSwapStore(string directory)
    {
        if (!Directory.Exists(directory))
            throw new SwapStoreException("open", 0, directory, $"the swap folder '{directory}' does not exist; create it or pass another.");
        int flags = FileIo.O_TMPFILE | FileIo.O_RDWR | FileIo.O_CLOEXEC;
        int fd = FileIo.TryOpen(directory, flags | FileIo.O_DIRECT, out int errno);
        _direct = fd >= 0;
        if (fd < 0) fd = FileIo.TryOpen(directory, flags, out errno); // tmpfs and some others refuse O_DIRECT
        if (fd < 0)
            throw new SwapStoreException("open", 0, directory,
                $"no unlinked file could be created there ({Errno.Name(errno)}); pass a folder on a local disk you can write.");
        _fd = fd;
        _onTmpfs = FileIo.FileSystemType(fd) == FileIo.TmpfsMagic;
        _where = directory;
    }

    /// <summary>A store over an existing file or device (tests: /dev/full, a disk that is always full), without O_DIRECT.</summary>
    internal static FileSwapStore OverExisting(string path) => new(FileIo.Open(path, FileIo.O_RDWR | FileIo.O_CLOEXEC), path);

    private FileSwapStore(int fd, string path)
    {
        _fd = fd;
        _where = path;
    }

    /// <inheritdoc/>
    public override string Description => $"file in {_where} ({(_direct ? "O_DIRECT" : "fdatasync + fadvise")}{(_onTmpfs ? ", on tmpfs: frees no memory" : "")})";

    /// <inheritdoc/>
    public override bool ReleasesMemory => !_onTmpfs;

    /// <summary>True when the file bypasses the page cache with O_DIRECT.</summary>
    internal bool Direct => _direct;

    // Large transfers go as a few concurrent requests: a virtio or NVMe disk serves several at once, and one
    // synchronous O_DIRECT request at a time leaves it idle between them (no readahead or writeback helps here).
    private const long ParallelChunkBytes = 16L << 20;
    private const int MaxParallelRequests = 4;

    private void Transfer(long offset, Span<IoVec> vectors, long bytes, bool write)
    {
        if (bytes < 2 * ParallelChunkBytes)
        {
            if (write) FileIo.PwritevExact(_fd, vectors, offset);
            else FileIo.PreadvExact(_fd, vectors, offset);
            return;
        }
        // Cut the list at vector boundaries into parts of about bytes / parts each.
        int parts = (int)Math.Min(MaxParallelRequests, bytes / ParallelChunkBytes);
        var all = vectors.ToArray();
        var starts = new List<(int First, int Count, long Offset)>();
        long target = bytes / parts, acc = 0, partOffset = offset;
        int first = 0;
        for (int i = 0; i < all.Length; i++)
        {
            acc += (long)all[i].Length;
            if (acc >= target || i == all.Length - 1)
            {
                starts.Add((first, i + 1 - first, partOffset));
                partOffset += acc;
                acc = 0;
                first = i + 1;
            }
        }
        try
        {
            Parallel.ForEach(starts, new ParallelOptions { MaxDegreeOfParallelism = MaxParallelRequests }, part =>
            {
                var slice = all.AsSpan(part.First, part.Count);
                if (write) FileIo.PwritevExact(_fd, slice, part.Offset);
                else FileIo.PreadvExact(_fd, slice, part.Offset);
            });
        }
        catch (AggregateException e) when (e.InnerException is NativeCallException failed)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failed);
        }
    }

    private protected override void WriteAt(long offset, Span<IoVec> vectors, long bytes)
    {
        Transfer(offset, vectors, bytes, write: true);
        if (_direct) return;
        FileIo.Fdatasync(_fd);
        FileIo.Fadvise(_fd, offset, bytes, FileIo.POSIX_FADV_DONTNEED);
    }

    private protected override void ReadAt(long offset, Span<IoVec> vectors, long bytes)
    {
        Transfer(offset, vectors, bytes, write: false);
        if (!_direct) FileIo.Fadvise(_fd, offset, bytes, FileIo.POSIX_FADV_DONTNEED);
    }

    private protected override void Discard(long offset, long bytes)
    {
        // Best effort: a device (or a file system without hole punching) keeps the blocks, the extent is reused anyway.
        try { Libc.Fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, bytes); }
        catch (NativeCallException) { }
    }

    private protected override void Close() => Libc.Close(_fd);
}
