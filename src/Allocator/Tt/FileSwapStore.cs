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
    private readonly long _keptFreeBytes = KeptFreeDiskBytes;

    /// <summary>A store in an unlinked file under <paramref name="directory"/>, keeping up to <paramref name="keptFreeBytes"/> of freed space allocated.</summary>
    internal FileSwapStore(string directory, long keptFreeBytes = KeptFreeDiskBytes)
    {
        _keptFreeBytes = keptFreeBytes;
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
        // Reads go through the page cache on an open file description of their own, reopened through /proc: writes stay
        // O_DIRECT on the first (O_DIRECT, like the readahead mode a read sets, belongs to the description, not to
        // the file). Where the reopen is refused, reads stay on the first description.
        int probe = FileIo.TryOpen(ReopenPath, FileIo.O_RDWR | FileIo.O_CLOEXEC, out _);
        CachedReads = probe >= 0;
        if (probe >= 0) Libc.Close(probe);

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
    public override string Description
        => $"file in {_where} ({(_direct ? "O_DIRECT writes" : "fdatasync + fadvise")}{(CachedReads ? ", cached reads + fadvise" : "")}{(_onTmpfs ? ", on tmpfs: frees no memory" : "")})";

    /// <inheritdoc/>
    public override bool ReleasesMemory => !_onTmpfs;

    /// <summary>True when the file bypasses the page cache with O_DIRECT.</summary>
    internal bool Direct => _direct;

    /// <summary>A descriptor of the file (tests look at its page cache with it).</summary>
    internal int ReadDescriptor => _fd;

    /// <summary>True while reads may reopen the file for a description of their own (tests turn it off).</summary>
    internal bool CachedReads { get; set; }

    private string ReopenPath => $"/proc/self/fd/{_fd}";

    // Reads go through the page cache whenever they can: the kernel's readahead keeps the disk busy with large
    // requests of its own folios, where an O_DIRECT read into the buffer's scattered 4 KiB pages is cut into requests
    // of at most max_segments pages. Measured on this machine's virtio disk (64 MiB into prefaulted memfd pages, one
    // reader, 8 MiB requests): 44-46 ms through the cache against 68-85 ms O_DIRECT. The cache pages of each chunk
    // are dropped as soon as it is read, so they never hold more than a chunk and the readahead window.
    private void ReadBehindPrefault(long offset, Span<IoVec> vectors, long bytes, bool continues)
    {
        int fd = CachedReads ? FileIo.TryOpen(ReopenPath, FileIo.O_RDWR | FileIo.O_CLOEXEC, out _) : -1;
        bool own = fd >= 0;
        if (!own) fd = _fd;
        bool cached = own || !_direct;
        try
        {
            if (bytes < 2 * PrefaultedRead.ChunkBytes)
            {
                if (own && !continues) FileIo.Fadvise(fd, 0, 0, FileIo.POSIX_FADV_RANDOM); // just these bytes: no readahead past them
                FileIo.PreadvExact(fd, vectors, offset);
            }
            else PrefaultedRead.Run(fd, vectors.ToArray(), offset, dropCache: cached, boundedTail: own && !continues);
            if (cached) FileIo.Fadvise(fd, offset, bytes, FileIo.POSIX_FADV_DONTNEED);
        }
        finally
        {
            if (own) Libc.Close(fd);
        }
    }

    private protected override void WriteAt(long offset, Span<IoVec> vectors, long bytes)
    {
        // One request per part: a swap-out writes 8 MiB parts in order (PageArray.BackupPartBytes) and gives each
        // part's pages back while the next is written, which keeps the disk as busy as concurrent requests did.
        FileIo.PwritevExact(_fd, vectors, offset);
        if (_direct) return;
        FileIo.Fdatasync(_fd);
        FileIo.Fadvise(_fd, offset, bytes, FileIo.POSIX_FADV_DONTNEED);
    }

    private protected override void ReadAt(long offset, Span<IoVec> vectors, long bytes, bool continues) => ReadBehindPrefault(offset, vectors, bytes, continues);

    // Freed disk space stays allocated up to this much, as Linux keeps freed swap slots (discard is opt-in there):
    // a swap-out over allocated blocks is an overwrite, and a swap-in does not punch. Measured on this machine's
    // ext4 (virtio disk, 64 MiB, O_DIRECT): a write into a hole 45-64 ms against 27-36 ms over allocated blocks, and
    // punching a restored buffer 2 MiB extent by extent 85-120 ms. Disk space is not the store's scarce resource,
    // memory is; the bound keeps a burst of swapping from holding a large file for the life of the process.
    private const long KeptFreeDiskBytes = 1L << 30;

    private protected override long KeptFreeBytes => _keptFreeBytes;

    internal override long AllocatedBytes => AllocatedBytesOf(_fd);

    private protected override void Discard(long offset, long bytes)
    {
        // Best effort: a device (or a file system without hole punching) keeps the blocks, the extent is reused anyway.
        try { Libc.Fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, bytes); }
        catch (NativeCallException) { }
    }

    private protected override void Close()
    {
        Libc.Close(_fd);
    }
}
