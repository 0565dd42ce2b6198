using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// The shmem store: a memfd, as TTM backs up to a shmem file. Its pages stay in RAM and in the process's memory
/// cgroup (this machine has no system swap to push them to), so it is a speed option, not a way to free memory.
/// </summary>
internal sealed class MemfdSwapStore : SwapStore
{
    private readonly int _fd = Libc.MemfdCreate("pagepool-swap", Libc.MFD_CLOEXEC);

    /// <inheritdoc/>
    public override string Description => "memfd (shmem: stays in memory)";

    /// <inheritdoc/>
    public override bool ReleasesMemory => false;

    // Freed shmem is memory: it is punched out at once.
    private protected override long KeptFreeBytes => 0;

    internal override long AllocatedBytes => AllocatedBytesOf(_fd);

    private protected override void WriteAt(long offset, Span<IoVec> vectors, long bytes) => FileIo.PwritevExact(_fd, vectors, offset);

    private protected override void ReadAt(long offset, Span<IoVec> vectors, long bytes, bool continues) => FileIo.PreadvExact(_fd, vectors, offset);

    private protected override void Discard(long offset, long bytes)
        => Libc.Fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, bytes);

    private protected override void Close() => Libc.Close(_fd);
}
