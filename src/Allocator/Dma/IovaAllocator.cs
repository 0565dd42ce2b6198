using System.Runtime.CompilerServices;

namespace PagePool.Dma;

/// <summary>
/// An IOVA space, as Linux's iova.c: ranges of page frames handed out size-aligned and top-down from the caller's
/// limit, a per-CPU range cache (<see cref="IovaRcache"/>) in front, and the two rules that keep a full space cheap:
/// once a 32-bit allocation of some size failed, later ones of that size or more fail at once (max32_alloc_size)
/// until a 32-bit range is freed; and on failure the caches are flushed back into the tree and the search retried once.
/// </summary>
/// <remarks>
/// The tree is a sorted list of [lo, hi] ranges under one lock: the slow path. Linux keeps an rbtree with a cached
/// node; the cache is what makes the tree rare, and it is lock-free here.
/// Public because it is useful on its own (any page-frame range allocator with per-CPU caches) and so the tool can
/// measure it; every device with IOMMU ops has one.
/// </remarks>
public sealed class IovaAllocator
{
    /// <summary>IOVA_RANGE_CACHE_MAX_SIZE: sizes 2^0..2^5 pages are cached.</summary>
    internal const int RangeCacheMaxSize = 6;
    internal const ulong Dma32BitPfn = 1UL << (32 - 12);

    private readonly List<(ulong Lo, ulong Hi)> _ranges = new();
    private readonly Lock _lock = new();
    private readonly IovaRcache _rcache;
    private readonly ulong _startPfn;
    private ulong _max32AllocSize = Dma32BitPfn;
    private long _usedPages;

    /// <summary>An empty space whose lowest page frame is <paramref name="startPfn"/> (at least 1: 0 means failure).</summary>
    public IovaAllocator(ulong startPfn) : this(startPfn, Environment.ProcessorCount) { }

    internal IovaAllocator(ulong startPfn, int cpus)
    {
        if (startPfn == 0)
            throw new ArgumentOutOfRangeException(nameof(startPfn), startPfn, "Page frame 0 cannot be handed out: 0 is the failure value.");
        _startPfn = startPfn;
        _rcache = new IovaRcache(this, cpus);
    }

    /// <summary>Pages allocated from the tree (cached ranges count as used until flushed).</summary>
    public long UsedPages => Volatile.Read(ref _usedPages);

    /// <summary>
    /// A range of <paramref name="pages"/> page frames ending at or below <paramref name="limitPfn"/>, aligned to
    /// the size rounded up to a power of two; 0 when the space has none even after flushing the caches.
    /// </summary>
    public ulong AllocateRange(ulong pages, ulong limitPfn)
    {
        if (pages == 0 || pages > 1UL << 40)
            throw new ArgumentOutOfRangeException(nameof(pages), pages, "A range has 1 to 2^40 pages.");
        if (limitPfn >= 1UL << 52)
            throw new ArgumentOutOfRangeException(nameof(limitPfn), limitPfn, "The limit is a page frame number: below 2^52 (a 64-bit address shifted by 12).");
        return AllocFast(pages, limitPfn);
    }

    /// <summary>
    /// Give back a range from <see cref="AllocateRange"/> with the page count it was asked with. Not checked on this
    /// path (as iova.c's free_iova_fast): a range that was never allocated ends up cached and handed out later.
    /// </summary>
    public void FreeRange(ulong pfn, ulong pages)
    {
        if (pages == 0 || pages > 1UL << 40)
            throw new ArgumentOutOfRangeException(nameof(pages), pages, "A range has 1 to 2^40 pages.");
        FreeFast(pfn, pages);
    }

    /// <summary>Give every cached range back to the tree.</summary>
    public void FlushCaches() => _rcache.FlushAll();

    internal ulong StartPfn => _startPfn;

    /// <summary>The size the fast path allocates for a request: powers of two below the largest cached size (iova.c rounds them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong RoundSize(ulong pages) => pages < (1UL << (RangeCacheMaxSize - 1)) ? RoundUpPow2(pages) : pages;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong RoundUpPow2(ulong x) => x <= 1 ? 1 : 1UL << (64 - System.Numerics.BitOperations.LeadingZeroCount(x - 1));

    /// <summary>
    /// alloc_iova_fast: a range of <paramref name="pages"/> (rounded) ending at or below <paramref name="limitPfn"/>,
    /// from the per-CPU cache when it has one, else from the tree; on failure, when <paramref name="flushCaches"/>,
    /// flush every cache and retry once (Linux's flush_rcache: false for the first try below 4 GiB, whose failure
    /// only sends the device to its whole space). Returns 0 when the space has no such range.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong AllocFast(ulong pages, ulong limitPfn, bool flushCaches = true)
    {
        ulong size = RoundSize(pages);
        ulong pfn = _rcache.TryGet(size, limitPfn);
        return pfn != 0 ? pfn : AllocSlow(size, limitPfn, flushCaches);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong AllocSlow(ulong size, ulong limitPfn, bool flushCaches)
    {
        if (Faults.FaultInjector.ShouldFail(Faults.FaultPoint.IovaSpace)) return 0; // as if the space had no free range
        ulong pfn = Alloc(size, limitPfn);
        if (pfn != 0 || !flushCaches) return pfn;
        _rcache.FlushAll();
        return Alloc(size, limitPfn);
    }

    /// <summary>free_iova_fast: back to the per-CPU cache when the size is cached, else to the tree.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreeFast(ulong pfn, ulong pages)
    {
        ulong size = RoundSize(pages);
        if (!_rcache.TryInsert(pfn, size)) Free(pfn);
    }

    /// <summary>
    /// free_iova_fast for a batch of ranges (a flush queue's) into the cache of <paramref name="cpu"/>, the CPU that
    /// unmapped them, with one visit to each size's cache.
    /// </summary>
    internal void FreeFastBatch(ReadOnlySpan<ulong> pfns, ReadOnlySpan<ulong> pages, int cpu) => _rcache.InsertBatch(pfns, pages, cpu);

    /// <summary>alloc_iova with size_aligned: the highest free range of <paramref name="size"/> aligned to its power of two.</summary>
    internal ulong Alloc(ulong size, ulong limitPfn)
    {
        ulong alignMask = RoundUpPow2(size) - 1;
        lock (_lock)
        {
            if (limitPfn < Dma32BitPfn && size >= _max32AllocSize)
                return 0; // fast fail: a 32-bit range this large was already not found
            // Walk down from the limit through the gaps between allocated ranges.
            ulong high = limitPfn + 1; // exclusive top of the current gap
            int i = UpperIndex(limitPfn);
            while (true)
            {
                ulong gapLo = i >= 0 ? _ranges[i].Hi + 1 : _startPfn;
                if (high >= size && high - size >= gapLo)
                {
                    ulong candidate = (high - size) & ~alignMask;
                    if (candidate >= gapLo && candidate >= _startPfn)
                    {
                        _ranges.Insert(i + 1, (candidate, candidate + size - 1));
                        _usedPages += (long)size;
                        return candidate;
                    }
                }
                if (i < 0) break;
                high = _ranges[i].Lo;
                i--;
            }
            if (limitPfn < Dma32BitPfn) _max32AllocSize = size;
            return 0;
        }
    }

    // Index of the last range whose Lo is at or below pfn (-1 when none).
    private int UpperIndex(ulong pfn)
    {
        int lo = 0, hi = _ranges.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (_ranges[mid].Lo <= pfn) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found;
    }

    /// <summary>free_iova: give a range back to the tree. False when no range starts at <paramref name="pfn"/>.</summary>
    internal bool Free(ulong pfn)
    {
        lock (_lock)
        {
            int i = UpperIndex(pfn);
            if (i < 0 || _ranges[i].Lo != pfn) return false;
            var r = _ranges[i];
            _ranges.RemoveAt(i);
            _usedPages -= (long)(r.Hi - r.Lo + 1);
            if (r.Hi < Dma32BitPfn) _max32AllocSize = Dma32BitPfn; // a 32-bit range came free: allow the search again
            return true;
        }
    }

    /// <summary>True when the tree holds a range starting exactly at pfn (tests and audits).</summary>
    internal bool IsAllocated(ulong pfn)
    {
        lock (_lock)
        {
            int i = UpperIndex(pfn);
            return i >= 0 && _ranges[i].Lo == pfn;
        }
    }


    internal long CachedRanges => _rcache.CachedCount;

    internal int MagazineRoomChunks => _rcache.RoomChunks;

    internal int DepotMagazines => _rcache.DepotMagazines;
}
