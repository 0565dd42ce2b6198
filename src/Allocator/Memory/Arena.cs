using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PagePool.Native;

namespace PagePool.Memory;

/// <summary>
/// One slot of emulated physical memory: a memfd mapped twice, as a cached "linear map" alias (the kernel's
/// direct map stand-in, the mapping caching changes protect) and as the view callers use. Both mappings are
/// 2 MiB aligned and advised for huge pages so an order-9 block can be one huge page.
/// </summary>
/// <remarks>
/// The slot is permanent, the mapping is not: when every block of the arena is free the mapping and the memfd
/// can be given back, and mapped anew later. The slot's frame range and its metadata words outlive that, so
/// generations keep counting and a handle from an earlier life never matches again.
///
/// When the memory space is disposed, each mapped arena is retired: both mappings are replaced, at the same
/// addresses, by private anonymous memory that costs nothing until touched, and the memfd is closed (its memory
/// goes back to the system). A thread that was already inside the space reads zeros or writes into that scratch
/// instead of faulting. The address ranges and the metadata words are released by the finalizer, once nothing
/// can reach the space any more.
///
/// Inside, a binary buddy allocator hands out 2^order blocks (orders 0..9) and merges freed buddies. It is the
/// stand-in for the kernel's page allocator and runs under the zone's lock: it is the slow path by design.
/// </remarks>
internal sealed unsafe class Arena
{
    internal const int MaxOrder = 9;
    private const nuint HugePage = 2u << 20;
    private const byte NotFreeHead = 0xFF;

    internal readonly int Index;
    internal readonly Zone Zone;
    internal readonly int Pages;
    internal readonly ulong BaseFrame;
    // One metadata line per page, as Linux gives every page a 64-byte struct page: pages handed to different
    // cores never share the cache line their ownership word lives on. 1.6% of the arena, allocated once per slot.
    private readonly ulong* _meta;
    internal const int MetaStride = 64 / sizeof(ulong);

    private readonly nuint _bytes;
    private readonly string _name;
    private int _fd = -1;
    internal byte* View;
    internal byte* Alias;

    // Buddy state: free-list heads per order, intrusive links per page, and the order of each free head.
    private readonly int[] _heads = new int[MaxOrder + 1];
    private readonly int[] _next, _prev;
    private readonly byte[] _freeOrder;
    private int _freeMask;
    internal int FreePages { get; private set; }

    internal Arena(int index, Zone zone, int pages, ulong baseFrame)
    {
        Index = index;
        Zone = zone;
        Pages = pages;
        BaseFrame = baseFrame;
        _bytes = (nuint)pages * PhysicalMemory.PageSize;
        _name = $"pagepool-arena-{index}";
        _meta = (ulong*)NativeMemory.AlignedAlloc((nuint)pages * 64, 64);
        NativeMemory.Clear(_meta, (nuint)pages * 64);
        _next = new int[pages];
        _prev = new int[pages];
        _freeOrder = new byte[pages];
    }

    /// <summary>The metadata word of a page (see PageMeta).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong* MetaOf(int page) => _meta + ((nuint)page * MetaStride);

    // Only the finalizer frees the metadata and a retired arena's address ranges: it runs when nothing can reach
    // the memory space, so no thread can be inside it (a Dispose cannot promise that for the hot paths).
    ~Arena()
    {
        if (_fd >= 0) Libc.Close(_fd);
        if (View != null) Libc.Munmap(View, _bytes);
        if (Alias != null) Libc.Munmap(Alias, _bytes);
        NativeMemory.AlignedFree(_meta);
    }

    internal bool IsMapped => _fd >= 0;
    internal nuint Bytes => _bytes;
    internal bool IsEmpty => FreePages == Pages;

    /// <summary>Create the memfd and both mappings; every block starts free.</summary>
    internal void Map()
    {
        Debug.Assert(!IsMapped && View == null && Alias == null, "an arena is mapped once per life, after any retirement ended its use");
        int fd = Libc.MemfdCreate(_name, Libc.MFD_CLOEXEC);
        byte* alias = null, view = null;
        try
        {
            Libc.Ftruncate(fd, (long)_bytes);
            alias = MapAligned(fd);
            view = MapAligned(fd);
        }
        catch
        {
            if (alias != null) Libc.Munmap(alias, _bytes);
            Libc.Close(fd);
            throw;
        }
        _fd = fd;
        Alias = alias;
        View = view;

        Array.Fill(_freeOrder, NotFreeHead);
        Array.Fill(_heads, -1);
        _freeMask = 0;
        FreePages = 0;
        for (int p = Pages - (1 << MaxOrder); p >= 0; p -= 1 << MaxOrder)
            Push(MaxOrder, p); // pushed high to low: the lowest block is handed out first, packing arenas low
        FreePages = Pages;
    }

    /// <summary>Give the whole arena back: both mappings and the memfd. Only when every block is free.</summary>
    internal void Unmap()
    {
        if (!IsMapped) return;
        Debug.Assert(IsEmpty, "an arena is unmapped only when every block in it is free");
        Libc.Munmap(View, _bytes);
        Libc.Munmap(Alias, _bytes);
        Libc.Close(_fd);
        _fd = -1;
        View = Alias = null;
    }

    /// <summary>
    /// The memory space is going away: swap both mappings for scratch anonymous memory at the same addresses (a
    /// late reader sees zeros, a late writer writes into nothing) and close the memfd, which frees its memory.
    /// The address ranges stay reserved until the finalizer.
    /// </summary>
    internal void Retire()
    {
        if (!IsMapped) return;
        const int Scratch = Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE;
        Libc.Mmap(View, _bytes, Libc.PROT_READ | Libc.PROT_WRITE, Scratch, -1, 0);
        Libc.Mmap(Alias, _bytes, Libc.PROT_READ | Libc.PROT_WRITE, Scratch, -1, 0);
        Libc.Close(_fd);
        _fd = -1; // View and Alias keep pointing at the scratch: the finalizer unmaps it
    }

    // Reserve 2 MiB-aligned address space, then map the memfd over it (MAP_FIXED) and ask for huge pages.
    private byte* MapAligned(int fd)
    {
        nuint reserve = _bytes + HugePage;
        byte* raw = Libc.Mmap(null, reserve, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        byte* aligned = (byte*)(((nuint)raw + HugePage - 1) & ~(HugePage - 1));
        nuint head = (nuint)(aligned - raw), tail = reserve - head - _bytes;
        if (head != 0) Libc.Munmap(raw, head);
        if (tail != 0) Libc.Munmap(aligned + _bytes, tail);
        byte* p;
        try
        {
            p = Libc.Mmap(aligned, _bytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_FIXED, fd, 0);
        }
        catch
        {
            Libc.Munmap(aligned, _bytes); // the reservation would otherwise stay mapped for the life of the process
            throw;
        }
        Libc.TryMadvise(p, _bytes, Libc.MADV_HUGEPAGE); // a hint: shmem THP may be off
        return p;
    }

    /// <summary>Punch the pages out of the memfd: the kernel frees them, RSS drops, and they read zero again.</summary>
    internal void Discard(int page, int count)
    {
        Debug.Assert(IsMapped && page >= 0 && count > 0 && page + count <= Pages);
        Libc.Fallocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE,
                          (long)page * PhysicalMemory.PageSize, (long)count * PhysicalMemory.PageSize);
    }

    /// <summary>True when a block of at least this order is free here.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool HasFree(int order) => (_freeMask >> order) != 0;

    /// <summary>Take a free block of exactly this order, splitting a larger one; -1 when there is none.</summary>
    internal int TryAllocate(int order)
    {
        Debug.Assert(IsMapped && (uint)order <= MaxOrder);
        int o = order;
        while (o <= MaxOrder && _heads[o] < 0) o++;
        if (o > MaxOrder) return -1;
        int page = _heads[o];
        Remove(o, page);
        while (o > order)
        {
            o--;
            Push(o, page + (1 << o)); // the upper half of each split stays free
        }
        FreePages -= 1 << order;
        return page;
    }

    /// <summary>
    /// The first page of <paramref name="blocks"/> free blocks of the largest order lying one after another (one
    /// physically contiguous range, as memblock or alloc_contig_range give), or -1 when the arena has no such run.
    /// </summary>
    internal int FindFreeRun(int blocks)
    {
        Debug.Assert(IsMapped && blocks > 0);
        int run = 0;
        for (int p = 0; p < Pages; p += 1 << MaxOrder)
        {
            run = _freeOrder[p] == MaxOrder ? run + 1 : 0;
            if (run == blocks) return p - ((blocks - 1) << MaxOrder);
        }
        return -1;
    }

    /// <summary>Take the free block of the largest order at <paramref name="page"/> (one that FindFreeRun found).</summary>
    internal void TakeFree(int page)
    {
        Debug.Assert(_freeOrder[page] == MaxOrder, "only a free block of the largest order is taken by its address");
        Remove(MaxOrder, page);
        FreePages -= 1 << MaxOrder;
    }

    /// <summary>Return a block, merging it with its buddy while the buddy is free at the same order.</summary>
    internal void Free(int page, int order)
    {
        Debug.Assert((uint)order <= MaxOrder && (page & ((1 << order) - 1)) == 0 && page + (1 << order) <= Pages,
                     "a block is freed at its own order and alignment");
        Debug.Assert(_freeOrder[page] == NotFreeHead, "a block is not freed twice");
        FreePages += 1 << order;
        while (order < MaxOrder)
        {
            int buddy = page ^ (1 << order);
            if (_freeOrder[buddy] != order) break;
            Remove(order, buddy);
            page = Math.Min(page, buddy);
            order++;
        }
        Push(order, page);
    }

    private void Push(int order, int page)
    {
        int head = _heads[order];
        _next[page] = head;
        _prev[page] = -1;
        if (head >= 0) _prev[head] = page;
        _heads[order] = page;
        _freeOrder[page] = (byte)order;
        _freeMask |= 1 << order;
    }

    private void Remove(int order, int page)
    {
        int next = _next[page], prev = _prev[page];
        if (prev >= 0) _next[prev] = next; else _heads[order] = next;
        if (next >= 0) _prev[next] = prev;
        _freeOrder[page] = NotFreeHead;
        if (_heads[order] < 0) _freeMask &= ~(1 << order);
    }
}
