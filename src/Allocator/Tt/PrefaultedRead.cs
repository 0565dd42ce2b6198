using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// One large O_DIRECT store read into freshly allocated pages, cut into chunks: the calling thread faults in the
/// destination chunk by chunk (one MADV_POPULATE_WRITE per run of adjacent pages) while thread-pool readers read each
/// chunk as soon as its pages are there, a few requests in flight at once.
/// </summary>
/// <remarks>
/// <para>Restored pages were punched out of the pool's memfd when they were swapped out, so each is a fresh shmem page
/// to allocate, zero and map: on this machine that costs about as much as the disk read. Faulted inside the read, one
/// page at a time, it adds to the read; done ahead of it, it overlaps with the disk. And one synchronous request at a
/// time leaves the disk idle between requests, so up to <see cref="Readers"/> chunks are read at once.</para>
/// <para>Progress never depends on the thread pool: once every chunk is prefaulted, the calling thread reads whatever
/// no helper has claimed, then waits only for helpers already inside a read. A helper that starts after that finds
/// nothing to claim and never touches the pages, which the caller may give back once <see cref="Run"/> returns.</para>
/// </remarks>
internal sealed unsafe class PrefaultedRead : IThreadPoolWorkItem
{
    private const int MADV_POPULATE_WRITE = 23; // Linux 5.14; where refused, the reads fault their pages as before

    /// <summary>Chunks read at once: the disk serves several requests in parallel (measured: a 64 MiB read cut into
    /// 8 MiB requests took 47-92 ms one at a time against 47-71 ms four at a time, virtio disk, AMD EPYC).</summary>
    internal const int Readers = 3;

    private readonly int _fd;
    private readonly IoVec[] _vectors;
    private readonly (int First, int Count, long Offset)[] _chunks;
    private readonly object _gate = new();
    private int _next, _prefaulted, _active;
    private bool _closed;
    private NativeCallException? _failed;

    private PrefaultedRead(int fd, IoVec[] vectors, (int First, int Count, long Offset)[] chunks)
    {
        _fd = fd;
        _vectors = vectors;
        _chunks = chunks;
    }

    /// <summary>Read the chunks of <paramref name="vectors"/> from <paramref name="fd"/>; returns when no thread touches them any more.</summary>
    internal static void Run(int fd, IoVec[] vectors, (int First, int Count, long Offset)[] chunks)
    {
        var read = new PrefaultedRead(fd, vectors, chunks);
        for (int i = 1; i < Readers; i++) ThreadPool.UnsafeQueueUserWorkItem(read, preferLocal: false);
        try
        {
            read.Prefault();
            read.ReadChunks();
        }
        finally
        {
            read.Close();
        }
    }

    // Fault in every chunk in order, publishing how far it got; a refusal publishes everything (reads fault alone).
    private void Prefault()
    {
        bool works = true;
        for (int k = 0; k < _chunks.Length; k++)
        {
            if (works)
            {
                var (first, count, _) = _chunks[k];
                int i = first;
                while (works && i < first + count)
                {
                    // One call per run of adjacent pages.
                    byte* start = _vectors[i].Base;
                    nuint length = _vectors[i].Length;
                    while (++i < first + count && _vectors[i].Base == start + length) length += _vectors[i].Length;
                    works = Libc.TryMadvise(start, length, MADV_POPULATE_WRITE);
                }
            }
            Volatile.Write(ref _prefaulted, k + 1);
            lock (_gate) Monitor.PulseAll(_gate); // readers waiting for this chunk
        }
    }

    // Claim chunks in order and read each once its pages are prefaulted; stop at the first failure anywhere.
    private void ReadChunks()
    {
        while (true)
        {
            int k;
            lock (_gate)
            {
                if (_failed is not null || _next >= _chunks.Length) return;
                k = _next++;
            }
            // Block, not spin: on a machine with few cores a spinning reader takes the CPU from the thread prefaulting.
            if (Volatile.Read(ref _prefaulted) <= k)
                lock (_gate) while (Volatile.Read(ref _prefaulted) <= k) Monitor.Wait(_gate);
            var (first, count, offset) = _chunks[k];
            try
            {
                FileIo.PreadvExact(_fd, _vectors.AsSpan(first, count), offset);
            }
            catch (NativeCallException e)
            {
                lock (_gate) _failed ??= e;
                return;
            }
        }
    }

    void IThreadPoolWorkItem.Execute()
    {
        lock (_gate)
        {
            if (_closed) return;
            _active++;
        }
        try
        {
            ReadChunks();
        }
        finally
        {
            lock (_gate)
            {
                if (--_active == 0) Monitor.PulseAll(_gate);
            }
        }
    }

    // Wait for helpers inside a read, then report the first failure.
    private void Close()
    {
        lock (_gate)
        {
            _closed = true;
            while (_active > 0) Monitor.Wait(_gate);
        }
        if (_failed is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(_failed);
    }
}
