using PagePool.Memory;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// The reference: what a caller of the pool can observe, kept the obvious way. A buffer is its caching mode, its
/// zone, its size and its bytes; nothing about orders, magazines or frames. The real system must agree with it on
/// every result, every byte and every error.
/// </summary>
public sealed class PoolModel
{
    public sealed class Buffer(int id, int tag, CachingMode caching, Zone zone, int pages, byte[]? knownBytes)
    {
        public readonly int Id = id;
        /// <summary>The tag of the step that allocated it.</summary>
        public readonly int Tag = tag;
        public CachingMode Caching = caching;
        public readonly Zone Zone = zone;
        public readonly int Pages = pages;
        /// <summary>The bytes the buffer must read; null while they are unknown (NoClear: a previous owner's data).</summary>
        public byte[]? Bytes = knownBytes;
        /// <summary>Its live streaming DMA mappings (only a buffer whose bytes are known is mapped).</summary>
        public readonly List<DmaModel.Mapping> Mappings = new();
    }

    private int _nextId;
    public readonly List<Buffer> Live = new();

    public Buffer Allocate(int tag, CachingMode caching, Zone zone, int pages, bool noClear)
    {
        var b = new Buffer(_nextId++, tag, caching, zone, pages, noClear ? null : new byte[pages * PhysicalMemory.PageSize]);
        Live.Add(b);
        return b;
    }

    public void Release(Buffer b) => Live.Remove(b);

    public long HeldPages(CachingMode caching) => Live.Where(b => b.Caching == caching).Sum(b => (long)b.Pages);

    public long HeldPages() => Live.Sum(b => (long)b.Pages);
}
