using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// One large store read into freshly allocated pages, cut into 2 MiB chunks: helper threads fault in the destination
/// chunk after chunk (one MADV_POPULATE_WRITE per run of adjacent pages) while the calling thread reads the chunks in
/// order, each as soon as its pages are there, and faults in the next chunk itself whenever it would wait.
/// </summary>
/// <remarks>
/// <para>Restored pages were punched out of the pool's memfd when they were swapped out, so each is a fresh shmem page
/// to allocate, zero and map: on this machine that costs more CPU than the disk read takes time (64 MiB: 50 ms to
/// fault in, 45 ms to read). Faulted inside the read, one page at a time, it adds to the read; faulted ahead of it on
/// the other cores, it overlaps with the disk. Through the page cache, chunks are asked for a few ahead of the read
/// (see <see cref="ChunksAhead"/>), so the disk streams; small chunks let the first read start, and the last end,
/// right behind the faulting.</para>
/// <para>Measured in C on this machine (virtio disk, AMD EPYC, 2 cores; 64 MiB, fresh memfd pages): one faulting
/// thread and 8 MiB reads 52-88 ms; two faulting threads and 2 MiB reads 44-64 ms; reads that fault their own pages
/// 64-103 ms.</para>
/// <para>Progress never depends on the thread pool: the reader faults in any chunk nobody has claimed. Once the read
/// ends (or fails) no helper touches the pages any more, so the caller may give them back.</para>
/// </remarks>
internal sealed unsafe class PrefaultedRead : IThreadPoolWorkItem
{
    private const int MADV_POPULATE_WRITE = 23; // Linux 5.14; where refused, the reads fault their pages as before

    /// <summary>Helper threads faulting in chunks ahead of the reader.</summary>
    internal const int Prefaulters = 2;

    /// <summary>Bytes per chunk (at vector boundaries, so about this much).</summary>
    internal const long ChunkBytes = 2L << 20;

    /// <summary>
    /// Chunks asked for ahead of the one being read (POSIX_FADV_WILLNEED), on a descriptor whose own readahead is off
    /// (POSIX_FADV_RANDOM): the disk streams as with the kernel's readahead, but never past the extent being read,
    /// whose pages the reads drop, into the next one (another buffer's swapped bytes, which would stay cached).
    /// </summary>
    internal const int ChunksAhead = 4;

    /// <summary>
    /// The last bytes of a read made with the kernel's readahead off. Its readahead is the faster (large folios), but
    /// it runs up to two windows (2 x read_ahead_kb, 8 MiB here) past the page being read, and what it reads past the
    /// end of the extent (another buffer's swapped bytes) arrives after the drop and stays cached. Switched off this
    /// far from the end, nothing in flight passes the end; the tail asks for its chunks itself (WILLNEED), inside it.
    /// </summary>
    internal const long TailBytes = 16L << 20;

    private readonly IoVec[] _vectors;
    private readonly (int First, int Count, long Offset, long Bytes)[] _chunks;
    private readonly int[] _faulted; // per chunk: 1 once its pages are in (or the kernel refused to fault them)
    private int _nextFault, _active, _closed;
    private volatile bool _refused;

    private PrefaultedRead(IoVec[] vectors, (int First, int Count, long Offset, long Bytes)[] chunks)
    {
        _vectors = vectors;
        _chunks = chunks;
        _faulted = new int[chunks.Length];
    }

    /// <summary>
    /// Read <paramref name="vectors"/> from <paramref name="fd"/> at <paramref name="offset"/>; with
    /// <paramref name="dropCache"/> each chunk's page cache is dropped as soon as it is read (the page cache then holds
    /// a chunk and the readahead window, never the buffer); with <paramref name="boundedTail"/> (a description of the
    /// caller's own, whose readahead mode may change) the kernel's readahead stops <see cref="TailBytes"/> before the
    /// end. Returns when no thread touches the pages any more.
    /// </summary>
    internal static void Run(int fd, IoVec[] vectors, long offset, bool dropCache, bool boundedTail)
    {
        var read = new PrefaultedRead(vectors, Cut(vectors, offset));
        for (int i = 0; i < Prefaulters; i++) ThreadPool.UnsafeQueueUserWorkItem(read, preferLocal: false);
        try
        {
            read.ReadAll(fd, dropCache, boundedTail);
        }
        finally
        {
            read.Close();
        }
    }

    private void ReadAll(int fd, bool dropCache, bool boundedTail)
    {
        var spin = new SpinWait();
        long end = _chunks[^1].Offset + _chunks[^1].Bytes;
        bool bounded = false;
        int asked = 0; // chunks asked for with WILLNEED once bounded
        if (boundedTail) FileIo.Fadvise(fd, 0, 0, FileIo.POSIX_FADV_NORMAL);
        for (int k = 0; k < _chunks.Length; k++)
        {
            if (boundedTail && !bounded && _chunks[k].Offset >= end - TailBytes)
            {
                FileIo.Fadvise(fd, 0, 0, FileIo.POSIX_FADV_RANDOM); // no readahead from here on
                bounded = true;
                asked = k;
            }
            for (; bounded && asked < _chunks.Length && asked <= k + ChunksAhead; asked++)
                FileIo.Fadvise(fd, _chunks[asked].Offset, _chunks[asked].Bytes, FileIo.POSIX_FADV_WILLNEED);
            // Wait for chunk k's pages by faulting in the next unclaimed chunk; spin only while a helper finishes k.
            while (Volatile.Read(ref _faulted[k]) == 0)
                if (!FaultNext()) spin.SpinOnce(sleep1Threshold: -1);
            var (first, count, at, bytes) = _chunks[k];
            FileIo.PreadvExact(fd, _vectors.AsSpan(first, count), at);
            if (dropCache) FileIo.Fadvise(fd, at, bytes, FileIo.POSIX_FADV_DONTNEED);
        }
    }

    // Claim the next chunk and fault it in; false when none is left or the read is over.
    private bool FaultNext()
    {
        if (Volatile.Read(ref _closed) != 0) return false;
        int k = Interlocked.Increment(ref _nextFault) - 1;
        if (k >= _chunks.Length) return false;
        var (first, count, _, _) = _chunks[k];
        int i = first;
        while (!_refused && i < first + count)
        {
            // One call per run of adjacent pages.
            byte* start = _vectors[i].Base;
            nuint length = _vectors[i].Length;
            while (++i < first + count && _vectors[i].Base == start + length) length += _vectors[i].Length;
            if (!Libc.TryMadvise(start, length, MADV_POPULATE_WRITE)) _refused = true; // the reads fault the pages
        }
        Volatile.Write(ref _faulted[k], 1);
        return true;
    }

    void IThreadPoolWorkItem.Execute()
    {
        Interlocked.Increment(ref _active); // a full fence: Close sees it, or this sees Close's flag
        try
        {
            while (FaultNext()) { }
        }
        finally
        {
            Interlocked.Decrement(ref _active);
        }
    }

    // After this no helper is inside FaultNext, and none will start one.
    private void Close()
    {
        Interlocked.Exchange(ref _closed, 1);
        var spin = new SpinWait();
        while (Volatile.Read(ref _active) != 0) spin.SpinOnce(sleep1Threshold: -1);
    }

    // Cut a scatter list at vector boundaries into chunks of about ChunkBytes, each with its file offset and size.
    private static (int First, int Count, long Offset, long Bytes)[] Cut(IoVec[] vectors, long offset)
    {
        var chunks = new List<(int, int, long, long)>();
        long acc = 0;
        int first = 0;
        for (int i = 0; i < vectors.Length; i++)
        {
            acc += (long)vectors[i].Length;
            if (acc >= ChunkBytes || i == vectors.Length - 1)
            {
                chunks.Add((first, i + 1 - first, offset, acc));
                offset += acc;
                acc = 0;
                first = i + 1;
            }
        }
        return chunks.ToArray();
    }
}
