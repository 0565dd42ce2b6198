using System.Runtime.CompilerServices;

namespace PagePool.Dma;

/// <summary>
/// Room for <c>n</c> ulongs on whole 4 KiB pages that hold nothing else: a pinned array one page longer than the
/// room, and the room starting at its first page boundary.
/// </summary>
/// <remarks>
/// For per-CPU data written in order (a flush queue's entries). Hardware stream prefetchers follow such a run of
/// lines ahead of the writer and stop only at a page boundary; on an ordinary managed array the run's last lines are
/// followed, in the same page, by whatever was allocated next, often the next CPU's own data, which the prefetch then
/// takes from that CPU. The GC never moves a pinned array, so the pointer stays valid as long as this object lives.
/// </remarks>
internal sealed unsafe class PagePrivate
{
    private const int PageBytes = 4096;
    private readonly ulong[] _storage;

    /// <summary>The first ulong of the room, on a page boundary.</summary>
    internal readonly ulong* Start;

    internal PagePrivate(int ulongs)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ulongs);
        long roomBytes = ((long)ulongs * sizeof(ulong) + PageBytes - 1) & ~(long)(PageBytes - 1);
        _storage = GC.AllocateArray<ulong>(checked((int)((roomBytes + PageBytes) / sizeof(ulong))), pinned: true);
        var first = (nuint)Unsafe.AsPointer(ref _storage[0]);
        Start = (ulong*)((first + PageBytes - 1) & ~(nuint)(PageBytes - 1));
    }

    /// <summary>Bytes from <see cref="Start"/> to the end of the storage: at least the room, rounded up to whole pages.</summary>
    internal long RoomBytes => (long)((byte*)Unsafe.AsPointer(ref _storage[^1]) + sizeof(ulong) - (byte*)Start);
}
