using System.Runtime.CompilerServices;

namespace PagePool.Pool;

/// <summary>
/// A lock-free stack of magazines (Treiber), ABA-safe: the head packs a magazine id with a 32-bit tag that
/// changes on every push and pop, so a head that was popped and pushed back in between no longer compares
/// equal. Magazines are never freed while the pool lives, so reading a stale magazine's link is harmless: the
/// compare-and-swap that would use it fails.
/// </summary>
internal sealed class MagazineStack(MagazineRegistry registry)
{
    private long _head; // (tag << 32) | id; id 0 = empty

    internal bool IsEmpty => (int)Volatile.Read(ref _head) == 0;

    internal void Push(Magazine m)
    {
        var spin = new SpinWait();
        while (true)
        {
            long head = Volatile.Read(ref _head);
            m.NextId = (int)head;
            long next = (((head >>> 32) + 1) << 32) | (uint)m.Id;
            if (Interlocked.CompareExchange(ref _head, next, head) == head) return;
            spin.SpinOnce(-1);
        }
    }

    internal Magazine? Pop()
    {
        var spin = new SpinWait();
        while (true)
        {
            long head = Volatile.Read(ref _head);
            int id = (int)head;
            if (id == 0) return null;
            var m = registry[id];
            long next = (((head >>> 32) + 1) << 32) | (uint)Volatile.Read(ref m.NextId);
            if (Interlocked.CompareExchange(ref _head, next, head) == head) return m;
            spin.SpinOnce(-1);
        }
    }
}

/// <summary>
/// Every magazine of a pool type by id, in chunks that never move, so a lock-free reader can map an id to its
/// magazine while new magazines are being added (which takes a lock: it is the rare, allocating path).
/// </summary>
internal sealed class MagazineRegistry(int capacity)
{
    private const int ChunkShift = 10, ChunkSize = 1 << ChunkShift;
    private readonly Magazine[]?[] _chunks = new Magazine[]?[1 << 16];
    private readonly Lock _lock = new();
    private int _count;

    internal Magazine this[int id]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _chunks[id >> ChunkShift])![id & (ChunkSize - 1)];
    }

    internal Magazine Create()
    {
        lock (_lock)
        {
            int id = ++_count;
            if (id >> ChunkShift >= _chunks.Length)
                throw new PagePoolException("A pool type ran out of magazine ids; this means a leak of magazines, a bug.");
            var chunk = _chunks[id >> ChunkShift] ??= new Magazine[ChunkSize];
            var m = new Magazine(capacity, id);
            Volatile.Write(ref chunk[id & (ChunkSize - 1)], m);
            return m;
        }
    }
}
