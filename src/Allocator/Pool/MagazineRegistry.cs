using System.Runtime.CompilerServices;

namespace PagePool.Pool;

/// <summary>
/// Every magazine of a pool type by id, in chunks that never move, so a lock-free reader can map an id to its
/// magazine while new magazines are being added (which takes a lock: it is the rare, allocating path). The chunk
/// table starts small and doubles as magazines are made: a pool type that never sees a page costs a few hundred
/// bytes, not a table sized for the largest id.
/// </summary>
internal sealed class MagazineRegistry(int capacity)
{
    private const int ChunkShift = 6, ChunkSize = 1 << ChunkShift;
    // Ids fit the 32 low bits of a depot head; 2^22 magazines of even one block is far beyond any real pool.
    private const int MaxChunks = 1 << 16;

    private Magazine[]?[] _chunks = new Magazine[]?[1];
    private readonly Lock _lock = new();
    private int _count;

    internal Magazine this[int id]
    {
        // A reader got the id from a depot head, pushed after the table holding its chunk was published.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _chunks)[id >> ChunkShift]![id & (ChunkSize - 1)];
    }

    internal Magazine Create()
    {
        lock (_lock)
        {
            int id = _count + 1;
            int chunk = id >> ChunkShift;
            if (chunk >= MaxChunks)
                throw new PagePoolException($"A pool type has made {id - 1} magazines: magazines are leaking, which is a bug in the pool.");
            var table = _chunks;
            if (chunk >= table.Length)
            {
                var grown = new Magazine[]?[Math.Min(MaxChunks, table.Length * 2)];
                table.CopyTo(grown, 0);
                Volatile.Write(ref _chunks, table = grown);
            }
            var slots = table[chunk] ??= new Magazine[ChunkSize];
            var m = new Magazine(capacity, id);
            Volatile.Write(ref slots[id & (ChunkSize - 1)], m);
            _count = id;
            return m;
        }
    }
}
