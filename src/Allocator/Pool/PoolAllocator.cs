using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Shrinker;

namespace PagePool.Pool;

/// <summary>
/// The page pool (Linux's ttm_pool, in user space). Changing a page's caching costs a flush of every cache line
/// and a page-table change of its cached alias, so pages are kept per caching mode x order x zone once converted,
/// and handed out again without paying that cost. Allocation walks orders as ttm_pool_alloc does; fresh pages
/// taken on a miss get their caching change deferred and applied as one batch per run. Reclaim (count, scan,
/// the limit, direct reclaim of a zone) lives in <see cref="PoolShrinker"/>; this class allocates and releases.
/// </summary>
/// <remarks>
/// <para>Ownership: every block's metadata word says who holds it (see PageMeta). Where threads can race on one
/// word it changes by compare-and-swap: a release moves Allocated -> Pooled and advances the generation, so the
/// old handle goes stale and a double free, a stale or foreign handle, or a release with the wrong caching or order
/// is a typed error before any state changes, even when two threads race on one handle. Where one thread holds the
/// block alone it writes the word with a plain store: a hit moves Pooled -> Allocated (the taker popped the block
/// from a magazine it held exclusively: no release can match a Pooled word), a fresh block is stamped by the
/// memory space that just took it out of its buddy lists, and a release that must be undone writes back the words
/// it had just swapped (those blocks are in no magazine yet, and their old handles no longer match).</para>
/// <para>The limit bounds every pooled page, magazines included. While the depots plus the most the per-core
/// magazines can hold fit under the limit, releases fill magazines freely; past that (<see cref="DepotGauge.Tight"/>)
/// releases go to the depot, counted, with the releasing core's magazines, and the release trims the pool back to
/// its limit (the top-level decision, as ttm_pool_free does). What can stay above the limit is what other threads
/// hold in their core caches at that instant: at most two magazines of 64 pages (512 KiB) per thread inside the
/// pool, so less than 1 MiB per CPU whatever the number of pool types. A limit of 0 keeps nothing.</para>
/// <para>Identity: a pool stamps its id (1..65535) on the blocks it hands out. At <see cref="Dispose"/> the blocks
/// callers still hold are re-owned to the memory space (owner 0, as if taken from it directly), so releasing them
/// afterwards gives them to the system, and a later pool that reuses the id cannot accept their handles.</para>
/// </remarks>
public sealed unsafe class PoolAllocator : IDisposable, ICachingListener
{
    /// <summary>Pages freed per shrinker step: TTM's formula for this machine's orders (see <see cref="PoolShrinker.ShrinkBatch"/>).</summary>
    public const int ShrinkBatch = PoolShrinker.ShrinkBatch;

    private const int Cachings = 3, Orders = PhysicalMemory.MaxOrder + 1, Zones = 2;
    // Bits of the metadata word a releasable block must match: state, caching, order, owner, low 24 generation bits.
    private const ulong ReleaseMask = (1UL << 48) - 1;
    private const int MaxId = 0xFFFF;

    // Pool ids in use (owner 0 is the memory space itself). Handed out round-robin so a disposed pool's id is
    // reused as late as possible; reuse is safe anyway since Dispose re-owns what callers hold.
    private static readonly bool[] s_liveIds = new bool[MaxId + 1];
    private static readonly Lock s_idLock = new();
    private static int s_lastId;

    private readonly PhysicalMemory _memory;
    private readonly PoolOptions _options;
    private readonly PoolType[] _types;
    private readonly DepotGauge _gauge;
    private readonly PoolShrinker _shrinker;
    private readonly ShrinkerRegistry? _registry;
    private readonly bool _clearOnAllocate, _clearOnRelease;
    private readonly long[] _switchedInUse = new long[Cachings]; // held pages callers moved between modes
    private int _disposed;

    /// <summary>The owner id this pool stamps on its blocks (1..65535).</summary>
    internal readonly int Id;

    /// <summary>
    /// A pool drawing pages from <paramref name="memory"/>. When <paramref name="shrinkers"/> is given the pool
    /// registers its shrinker there, so a <see cref="ReclaimThread"/> on that registry frees pooled pages under
    /// memory pressure; <see cref="Dispose"/> unregisters it (waiting for a scan in progress).
    /// </summary>
    public PoolAllocator(PhysicalMemory memory, PoolOptions? options = null, ShrinkerRegistry? shrinkers = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var opts = options ?? new PoolOptions();
        opts.Validate();
        _memory = memory;
        _options = opts;
        _clearOnAllocate = opts.Zeroing == ZeroPolicy.OnAllocate;
        _clearOnRelease = opts.Zeroing == ZeroPolicy.OnRelease;

        int slots = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(2, Environment.ProcessorCount));
        long magazinePages = 0;
        for (int o = 0; o <= PoolType.MaxMagazineOrder; o++)
            magazinePages += (long)Zones * Cachings * slots * 2 * MagazineBlocks(o) << o;
        _gauge = new DepotGauge(opts.LimitBytes >> PhysicalMemory.PageShift, magazinePages);
        _types = new PoolType[Zones * Cachings * Orders];
        for (int z = 0; z < Zones; z++)
            for (int c = 0; c < Cachings; c++)
                for (int o = 0; o < Orders; o++)
                    _types[TypeIndex((CachingMode)c, o, (Zone)z)] = new PoolType(_gauge, (CachingMode)c, o, (Zone)z, slots, MagazineBlocks(o));

        Id = TakeId();
        _shrinker = new PoolShrinker(memory, _types, _gauge, Id);
        try
        {
            _memory.AddCachingListener(Id, this); // throws when the memory space was disposed
        }
        catch
        {
            lock (s_idLock) s_liveIds[Id] = false; // a pool that was never made holds no id
            throw;
        }
        PoolMeterSource.Register(this);
        _registry = shrinkers;
        _registry?.Register(_shrinker, ShrinkerRegistry.DefaultSeeks, ShrinkBatch);
    }

    // Blocks per magazine of an order: MagazinePages pages at order 0, proportionally fewer above, at least one.
    private int MagazineBlocks(int order) => Math.Max(1, _options.MagazinePages >> order);

    private static int TakeId()
    {
        lock (s_idLock)
        {
            for (int k = 1; k <= MaxId; k++)
            {
                int id = (s_lastId + k) % (MaxId + 1);
                if (id == 0 || s_liveIds[id]) continue;
                s_liveIds[id] = true;
                s_lastId = id;
                return id;
            }
        }
        throw new PagePoolException($"{MaxId} pools are alive at once; dispose the pools your program no longer uses.");
    }

    void ICachingListener.OnCachingChanged(CachingMode from, CachingMode to, int pages)
    {
        Interlocked.Add(ref _switchedInUse[(int)from], -pages);
        Interlocked.Add(ref _switchedInUse[(int)to], pages);
    }

    /// <summary>
    /// Pages of a caching mode that callers hold now: handed out in that mode, plus those callers switched into
    /// it, less those they switched out of it (PoolTypeStatistics.InUsePages counts by the type handed out of).
    /// </summary>
    public long InUsePages(CachingMode caching)
    {
        CheckCaching(caching);
        long pages = Volatile.Read(ref _switchedInUse[(int)caching]);
        foreach (var t in _types) if (t.Caching == caching) pages += t.Snapshot().InUsePages;
        return pages;
    }

    /// <summary>The memory this pool draws from.</summary>
    public PhysicalMemory Memory => _memory;

    /// <summary>The options in force.</summary>
    public PoolOptions Options => _options;

    /// <summary>The pool's shrinker, to register with a <see cref="ShrinkerRegistry"/> of your own.</summary>
    public IShrinker Shrinker => _shrinker;

    /// <summary>The shrinker's name ("pagepool").</summary>
    public string Name => _shrinker.Name;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int TypeIndex(CachingMode c, int order, Zone z) => ((int)z * Cachings + (int)c) * Orders + order;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Pools(CachingMode c) => c != CachingMode.WriteBack || _options.PoolWriteBack;

    private static void CheckCaching(CachingMode caching)
    {
        if ((uint)caching >= Cachings)
            throw new ArgumentOutOfRangeException(nameof(caching), caching, "Unknown caching mode; use WriteBack, WriteCombined or Uncached.");
    }

    // ---- allocation -----------------------------------------------------------------------------------

    /// <summary>
    /// Allocate one 4 KiB page in the given caching mode. A pool hit is one atomic exchange, a store and a clear.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageHandle AllocatePage(CachingMode caching, Zone zone = Zone.Normal, AllocationFlags flags = AllocationFlags.None)
    {
        if ((uint)caching < Cachings && (uint)zone < Zones && (flags & ~AllocationFlags.NoClear) == 0
            && _types[TypeIndex(caching, 0, zone)].TryTake(out ulong raw))
        {
            var h = _memory.HandleOf(raw);
            TakeOwnership(h);
            if (_clearOnAllocate && (flags & AllocationFlags.NoClear) == 0)
                PhysicalMemory.ClearAs(caching, _memory.ViewOf(h), PhysicalMemory.PageSize);
            if (PagePoolEventSource.HitPathOn) PagePoolEventSource.Log.PoolHit((int)caching, 0);
            return h;
        }
        return AllocatePageSlow(caching, zone, flags);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageHandle AllocatePageSlow(CachingMode caching, Zone zone, AllocationFlags flags)
    {
        Span<PageHandle> one = stackalloc PageHandle[1];
        Allocate(1, caching, zone, one, flags);
        return one[0];
    }

    /// <summary>
    /// Where an allocation's order walk stands (ttm_pool_alloc_state): pages still to take, the order reached,
    /// whether the pool may still be asked (TTM's allow_pools), and where the run of fresh blocks whose caching
    /// change is deferred begins (TTM's caching_divide; -1 for none).
    /// </summary>
    private struct OrderWalk
    {
        internal int Remaining, Order, FreshFrom;
        internal bool AllowPools;
    }

    /// <summary>
    /// Allocate <paramref name="pageCount"/> 4 KiB pages as blocks of orders 0..9 into <paramref name="blocks"/>
    /// and return how many blocks were written. The walk starts at the highest order that fits the remaining
    /// count and never goes back up. A pool miss takes a fresh block of that order from the system, and from then
    /// on the walk takes fresh blocks only (TTM's allow_pools), so the fresh run gets one batched caching change;
    /// only when the system has no block of an order does the walk lower the order and ask the pool again. When
    /// the zone has nothing even at order 0, the pool's own pages of that zone are reclaimed and the walk retries
    /// at order 0 (it does not climb back up).
    /// On any error the call changes nothing: blocks taken from the pool go back to the pool, fresh ones to the
    /// system, counters as before, and nothing is written to the caller.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="blocks"/> filled before the count was reached; a span
    /// of <paramref name="pageCount"/> entries always suffices.</exception>
    /// <exception cref="ZoneExhaustedException">The zone has no page left.</exception>
    public int Allocate(int pageCount, CachingMode caching, Zone zone, Span<PageHandle> blocks, AllocationFlags flags = AllocationFlags.None)
    {
        if (pageCount <= 0)
            throw new ArgumentOutOfRangeException(nameof(pageCount), pageCount, "Allocate at least one page.");
        CheckCaching(caching);
        if ((uint)zone >= Zones)
            throw new ArgumentOutOfRangeException(nameof(zone), zone, "Unknown zone; use Dma32 or Normal.");
        if ((flags & ~AllocationFlags.NoClear) != 0)
            throw new ArgumentOutOfRangeException(nameof(flags), flags, "Unknown allocation flags; use None or NoClear.");
        ObjectDisposedException.ThrowIf(_disposed != 0, this);

        bool clear = _clearOnAllocate && (flags & AllocationFlags.NoClear) == 0;
        // Which blocks came from the pool, so that a failure can give them back there.
        int words = (blocks.Length + 63) >> 6;
        Span<ulong> fromPool = words <= 64 ? stackalloc ulong[words] : new ulong[words];
        fromPool.Clear();
        var walk = new OrderWalk
        {
            Remaining = pageCount,
            Order = Math.Min(PhysicalMemory.MaxOrder, BitOperations.Log2((uint)pageCount)),
            FreshFrom = -1,
            AllowPools = Pools(caching),
        };
        int n = 0;
        try
        {
            while (walk.Remaining > 0)
            {
                walk.Order = Math.Min(walk.Order, BitOperations.Log2((uint)walk.Remaining));
                if (n == blocks.Length)
                    throw new ArgumentException($"The span of {blocks.Length} handles filled before {pageCount} pages were allocated; pass a span of {pageCount} entries.", nameof(blocks));
                var type = _types[TypeIndex(caching, walk.Order, zone)];
                if (walk.AllowPools && type.TryTake(out ulong raw))
                {
                    var h = _memory.HandleOf(raw);
                    TakeOwnership(h);
                    if (clear) PhysicalMemory.ClearAs(caching, _memory.ViewOf(h), (nuint)h.PageCount << PhysicalMemory.PageShift);
                    if (walk.FreshFrom >= 0)
                    {
                        ApplyDeferredCaching(blocks[walk.FreshFrom..n], caching, zone);
                        walk.FreshFrom = -1;
                    }
                    if (PagePoolEventSource.HitPathOn) PagePoolEventSource.Log.PoolHit((int)caching, walk.Order);
                    fromPool[n >> 6] |= 1UL << n;
                    blocks[n++] = h;
                }
                else if (_memory.TryAllocateBlock(zone, walk.Order, Id, out var fresh))
                {
                    walk.AllowPools = false;
                    type.CountMiss();
                    if (PagePoolEventSource.PoolOn) PagePoolEventSource.Log.PoolMiss((int)caching, walk.Order, (int)zone);
                    if (caching != CachingMode.WriteBack && walk.FreshFrom < 0) walk.FreshFrom = n;
                    blocks[n++] = fresh; // fresh blocks read zero: their memfd range is new or was punched out
                }
                else if (walk.Order > 0)
                {
                    walk.Order--;
                    walk.AllowPools = Pools(caching);
                    continue;
                }
                else if (_shrinker.ReclaimZone(zone) == 0)
                {
                    if (PagePoolEventSource.MemoryOn) PagePoolEventSource.Log.ZoneExhausted((int)zone, 0);
                    throw new ZoneExhaustedException(zone, 0, _memory.Capacity(zone));
                }
                else
                {
                    continue; // direct reclaim freed pages of this zone: retry at order 0, never higher
                }
                walk.Remaining -= 1 << walk.Order;
            }
            if (walk.FreshFrom >= 0) ApplyDeferredCaching(blocks[walk.FreshFrom..n], caching, zone);
            return n;
        }
        catch
        {
            Undo(blocks[..n], fromPool, caching, zone);
            blocks[..n].Clear();
            throw;
        }
    }

    // A failed Allocate: blocks that came from the pool go back into it (uncounted), fresh ones to the system.
    private void Undo(Span<PageHandle> taken, ReadOnlySpan<ulong> fromPool, CachingMode caching, Zone zone)
    {
        int fresh = 0;
        for (int i = 0; i < taken.Length; i++)
        {
            var h = taken[i];
            if ((fromPool[i >> 6] & (1UL << i)) == 0)
            {
                taken[fresh++] = h;
                continue;
            }
            ulong* m = _memory.MetaOf(h);
            bool released = TryMarkReleased(m, h, caching);
            Debug.Assert(released, "the allocation still holds every block it took");
            _types[TypeIndex(caching, h.Order, zone)].Untake(h.WithGeneration(h.Generation + 1UL).Value);
        }
        if (fresh == 0) return;
        _memory.FreeBlocks(taken[..fresh], Id);
        foreach (var h in taken[..fresh]) _types[TypeIndex(caching, h.Order, zone)].CountGivenToSystem();
    }

    // Pooled -> Allocated with a plain store: the taker popped the block from a magazine it held alone, and a
    // racing release of a stale handle compares the whole word (state included) and fails.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void TakeOwnership(PageHandle h)
    {
        ulong* m = _memory.MetaOf(h);
        ulong w = Volatile.Read(ref *m);
        Debug.Assert(PageMeta.State(w) == PageState.Pooled && PageMeta.Owner(w) == Id, $"{h} was in the pool but is {PageMeta.State(w)} of owner {PageMeta.Owner(w)}");
        Volatile.Write(ref *m, PageMeta.WithState(w, PageState.Allocated));
    }

    // The deferred caching change of a run of fresh blocks: one batch, one fence.
    private void ApplyDeferredCaching(Span<PageHandle> fresh, CachingMode caching, Zone zone)
    {
        CachingTransition.Apply(_memory, fresh, caching);
        foreach (var h in fresh) _types[TypeIndex(caching, h.Order, zone)].CountTransitions(1);
    }

    // ---- release ---------------------------------------------------------------------------------------

    /// <summary>
    /// Allocated -> Pooled by compare-and-swap, advancing the generation: the one check-and-commit of a release.
    /// False when the word is not what this handle, this caching and this pool expect, or another thread won.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryMarkReleased(ulong* m, PageHandle h, CachingMode caching)
    {
        ulong w = Volatile.Read(ref *m);
        return (w & ReleaseMask) == PageMeta.Make(PageState.Allocated, caching, h.Order, Id, h.Generation)
               && Interlocked.CompareExchange(ref *m, PageMeta.NextGeneration(PageMeta.WithState(w, PageState.Pooled)), w) == w;
    }

    /// <summary>Give one block back. Same checks and guarantees as <see cref="Release"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReleasePage(PageHandle block, CachingMode caching)
    {
        ulong* m = _memory.Resolve(block, out var arena);
        if ((uint)caching >= Cachings || !TryMarkReleased(m, block, caching))
        {
            ReleaseRefused(block, caching);
            return;
        }
        if (_clearOnRelease)
            PhysicalMemory.ClearAs(caching, arena.View + ((nuint)block.Page << PhysicalMemory.PageShift), (nuint)block.PageCount << PhysicalMemory.PageShift);
        var released = block.WithGeneration(block.Generation + 1UL);
        if (Pools(caching))
        {
            _types[TypeIndex(caching, block.Order, arena.Zone)].Give(released.Value);
            if (_gauge.Tight) _shrinker.TrimToLimit();
            if (Volatile.Read(ref _disposed) != 0) FreePooledAfterDispose();
        }
        else ReturnToSystem([released], caching);
    }

    /// <summary>
    /// Give blocks back to their pool types (caching as stated, order as in each handle). Every handle is checked
    /// first: a double free, a stale handle, a handle of another pool or memory space, or a caching or order that
    /// does not match the block raises <see cref="PageHandleException"/> and nothing has changed; an unknown
    /// caching mode raises <see cref="ArgumentOutOfRangeException"/>. Write-back blocks go to the system when
    /// <see cref="PoolOptions.PoolWriteBack"/> is off; beyond the limit the pool trims back to it. After
    /// <see cref="Dispose"/>, released blocks go to the system.
    /// </summary>
    public void Release(ReadOnlySpan<PageHandle> blocks, CachingMode caching)
    {
        CheckCaching(caching);
        if (Volatile.Read(ref _disposed) != 0)
        {
            ReleaseAfterDispose(blocks, caching);
            return;
        }
        foreach (var h in blocks)
        {
            ulong w = Volatile.Read(ref *_memory.Resolve(h, out _));
            if ((w & ReleaseMask) != PageMeta.Make(PageState.Allocated, caching, h.Order, Id, h.Generation))
            {
                if (Volatile.Read(ref _disposed) != 0) { ReleaseAfterDispose(blocks, caching); return; }
                ThrowReleaseError(h, caching);
            }
        }

        Span<ulong> old = blocks.Length <= 256 ? stackalloc ulong[blocks.Length] : new ulong[blocks.Length];
        if (TryMarkAllReleased(blocks, caching, old) is var failed and >= 0)
        {
            bool repeated = blocks[..failed].Contains(blocks[failed]);
            if (Volatile.Read(ref _disposed) != 0 && !repeated) { ReleaseAfterDispose(blocks, caching); return; }
            if (repeated) throw RepeatedInOneRelease(blocks[failed]);
            ThrowReleaseError(blocks[failed], caching);
        }

        bool pooled = Pools(caching);
        foreach (var h in blocks)
        {
            var released = h.WithGeneration(h.Generation + 1UL);
            if (_clearOnRelease)
                PhysicalMemory.ClearAs(caching, _memory.ViewOf(h), (nuint)h.PageCount << PhysicalMemory.PageShift);
            if (pooled) _types[TypeIndex(caching, h.Order, _memory.ArenaOf(h).Zone)].Give(released.Value);
        }
        if (pooled)
        {
            if (_gauge.Tight) _shrinker.TrimToLimit();
            if (Volatile.Read(ref _disposed) != 0) FreePooledAfterDispose();
            return;
        }
        var toSystem = new PageHandle[blocks.Length];
        for (int i = 0; i < blocks.Length; i++) toSystem[i] = blocks[i].WithGeneration(blocks[i].Generation + 1UL);
        ReturnToSystem(toSystem, caching);
    }

    /// <summary>
    /// Give blocks straight back to the system, bypassing the pool: what a swap-out or an eviction does, where pooling
    /// the pages would free nothing. One batch: the caching change back to write-back for all of them, one fallocate
    /// punch per run of adjacent pages (the blocks are taken in address order, so a buffer's pages go as a few long
    /// runs), no clear (punched pages read zero). Counted as given to the system per pool type, as a release with
    /// write-back pooling off is. Same checks as <see cref="Release"/>; on any error the caller still holds every block
    /// (its handles valid, nothing counted). <paramref name="blocks"/> is reordered.
    /// </summary>
    internal void ReleaseToSystem(Span<PageHandle> blocks, CachingMode caching)
    {
        CheckCaching(caching);
        if (blocks.IsEmpty) return;
        if (Volatile.Read(ref _disposed) != 0)
        {
            ReleaseAfterDispose(blocks, caching);
            return;
        }
        blocks.Sort(static (a, b) => a.Arena != b.Arena ? a.Arena.CompareTo(b.Arena) : a.Page.CompareTo(b.Page));
        var held = blocks.ToArray(); // the caller's handles, to give back untouched on failure
        foreach (var h in held) _memory.Resolve(h, out _); // a malformed or foreign handle throws before any change
        Span<ulong> old = blocks.Length <= 256 ? stackalloc ulong[blocks.Length] : new ulong[blocks.Length];
        if (TryMarkAllReleased(held, caching, old) is var failed and >= 0)
        {
            if (failed > 0 && held[failed - 1] == held[failed]) throw RepeatedInOneRelease(held[failed]); // sorted: repeats are adjacent
            ThrowReleaseError(held[failed], caching);
        }
        for (int i = 0; i < blocks.Length; i++) blocks[i] = held[i].WithGeneration(held[i].Generation + 1UL);
        try
        {
            _memory.FreeBlocks(blocks, Id);
        }
        catch
        {
            // FreeBlocks changed nothing (the kernel refused a page-table change): the caller keeps its blocks.
            for (int k = 0; k < blocks.Length; k++) Volatile.Write(ref *_memory.MetaOf(held[k]), old[k]);
            held.CopyTo(blocks);
            throw;
        }
        foreach (var h in blocks) _types[TypeIndex(caching, h.Order, _memory.ArenaOf(h).Zone)].CountGivenToSystem();
    }

    /// <summary>
    /// Commit a release all or nothing: mark every block released (saving its word in <paramref name="old"/>), or, at
    /// the first that cannot be (repeated in the span, or raced by another thread), undo the ones before with plain
    /// stores (see the class remarks: those blocks are in no magazine yet, their old handles stale) and return its
    /// index. -1 when every block is committed.
    /// </summary>
    private int TryMarkAllReleased(ReadOnlySpan<PageHandle> blocks, CachingMode caching, Span<ulong> old)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ulong* m = _memory.MetaOf(blocks[i]);
            old[i] = Volatile.Read(ref *m);
            if (TryMarkReleased(m, blocks[i], caching)) continue;
            for (int k = 0; k < i; k++) Volatile.Write(ref *_memory.MetaOf(blocks[k]), old[k]);
            return i;
        }
        return -1;
    }

    private static PageHandleException RepeatedInOneRelease(PageHandle h)
        => new(h, HandleError.DoubleFree, "The handle appears twice in one release; nothing was released.");

    // Out of line: the release check failed. After Dispose the block is the memory space's and goes there;
    // otherwise say exactly what was wrong with the handle.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReleaseRefused(PageHandle h, CachingMode caching)
    {
        CheckCaching(caching);
        if (Volatile.Read(ref _disposed) != 0)
        {
            ReleaseAfterDispose([h], caching);
            return;
        }
        ThrowReleaseError(h, caching);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowReleaseError(PageHandle h, CachingMode caching)
    {
        ulong w = _memory.ResolveLive(h, out _); // throws for stale, double free, malformed, foreign space, order
        if (PageMeta.Owner(w) != Id)
            throw new PageHandleException(h, HandleError.Foreign, $"The block belongs to pool {PageMeta.Owner(w)}, not to this pool ({Id}).");
        if (PageMeta.State(w) != PageState.Allocated)
            throw new PageHandleException(h, HandleError.WrongState, "The block is pooled, not held by a caller.");
        if (PageMeta.Caching(w) != caching)
            throw new PageHandleException(h, HandleError.Mismatch, $"The block is {PageMeta.Caching(w)}, released as {caching}: it would land in the pool of another caching mode and be handed out with the wrong caching. Release it with the caching it has now.");
        throw new PageHandleException(h, HandleError.Stale, "Another thread released this block at the same time.");
    }

    // A release gave blocks to the pool while it was being disposed, possibly after Dispose had emptied it: free
    // what is pooled now. Dispose empties the pool after every release that missed the flag has given its blocks.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreePooledAfterDispose()
    {
        while (_shrinker.Scan(long.MaxValue) > 0) { }
    }

    // Dispose re-owned held blocks to the memory space (owner 0): check each as the space would, then free them.
    // A block still of this pool raced Dispose (not re-owned yet, or restored by a release's undo after it was).
    private void ReleaseAfterDispose(ReadOnlySpan<PageHandle> blocks, CachingMode caching)
    {
        foreach (var h in blocks)
        {
            ulong w = _memory.ResolveLive(h, out _);
            if (PageMeta.Owner(w) == Id && PageMeta.State(w) == PageState.Allocated)
            {
                _memory.Disown(Id); // Dispose has set the flag but not yet re-owned this block: do it now
                w = _memory.ResolveLive(h, out _);
            }
            if (PageMeta.Owner(w) != 0 || PageMeta.State(w) != PageState.Allocated)
                throw new PageHandleException(h, HandleError.Foreign, $"The pool ({Id}) was disposed and this block was not one it handed out.");
            if (PageMeta.Caching(w) != caching)
                throw new PageHandleException(h, HandleError.Mismatch, $"The block is {PageMeta.Caching(w)}, released as {caching}.");
        }
        _memory.FreeBlocks(blocks, 0);
    }

    // Released blocks that are not kept (write-back with PoolWriteBack off) go straight to the system.
    private void ReturnToSystem(ReadOnlySpan<PageHandle> blocks, CachingMode caching)
    {
        _memory.FreeBlocks(blocks, Id);
        foreach (var h in blocks) _types[TypeIndex(caching, h.Order, _memory.ArenaOf(h).Zone)].CountGivenToSystem();
    }

    // ---- reclaim (PoolShrinker does the work) --------------------------------------------------------------

    /// <summary>Pages pooled now, in all types, magazines included (the shrinker's count; racy by nature).</summary>
    public long Count() => _shrinker.Pooled();

    /// <summary>
    /// Free at least <paramref name="toScan"/> pooled pages when that many exist: batches of
    /// <see cref="ShrinkBatch"/> pages, round-robin over pool types, caching back to write-back and memory
    /// returned to the system. Returns the pages freed.
    /// </summary>
    public long Scan(long toScan) => _shrinker.Scan(toScan);

    // ---- statistics --------------------------------------------------------------------------------------

    /// <summary>Counters of every pool type that has seen any activity.</summary>
    public IReadOnlyList<PoolTypeStatistics> Statistics()
    {
        var list = new List<PoolTypeStatistics>();
        foreach (var t in _types)
        {
            var s = t.Snapshot();
            if (s.PooledPages != 0 || s.InUsePages != 0 || s.Hits != 0 || s.Misses != 0 || s.ReturnedPages != 0) list.Add(s);
        }
        return list;
    }

    /// <summary>
    /// A consistency check for tests and stress tools: while no other thread uses the pool, verify that every
    /// pooled block is recorded exactly once, in the pool type matching its caching, order and zone, as pooled by
    /// this pool in its current generation, and that <see cref="Count"/> agrees. Returns the pages pooled.
    /// Costs a walk of every pooled block: never call it on a hot path.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant is broken; the message names the first violation.</exception>
    public long Audit()
    {
        var seen = new HashSet<ulong>();
        var handles = new List<ulong>();
        long pages = 0;
        foreach (var t in _types)
        {
            handles.Clear();
            t.CollectPooled(handles);
            foreach (ulong raw in handles)
            {
                var h = _memory.HandleOf(raw);
                ulong frame = _memory.FrameOf(h);
                if (!seen.Add(frame))
                    throw new InvalidOperationException($"{h} is pooled twice.");
                ulong w = _memory.ResolveLive(h, out var arena);
                if (PageMeta.State(w) != PageState.Pooled || PageMeta.Owner(w) != Id)
                    throw new InvalidOperationException($"{h} is in the pool but its state is {PageMeta.State(w)} owned by {PageMeta.Owner(w)}.");
                if (PageMeta.Caching(w) != t.Caching || h.Order != t.Order || arena.Zone != t.Zone)
                    throw new InvalidOperationException($"{h} ({PageMeta.Caching(w)}, order {h.Order}, {arena.Zone}) sits in the wrong pool type.");
                pages += h.PageCount;
            }
        }
        long depot = 0;
        foreach (var t in _types) depot += t.DepotPages;
        if (depot != _gauge.Pages)
            throw new InvalidOperationException($"The depots hold {depot} pages but the limit gauge counts {_gauge.Pages}.");
        if (pages != Count())
            throw new InvalidOperationException($"Count() says {Count()} pages pooled, the magazines hold {pages}.");
        return pages;
    }

    /// <summary>
    /// Give every pooled page back to the system and retire the pool's id. Pages callers still hold stay valid:
    /// they are re-owned to the memory space (each is reported in the event stream, as TTM warns of pages still in
    /// use at pool teardown), and releasing them afterwards, through this pool or the space, returns them to the
    /// system, also when they race with Dispose. A registered shrinker is unregistered first (waiting for a scan in
    /// progress). Dispose must not race with calls that allocate from this pool.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _registry?.Unregister(_shrinker);
        PoolMeterSource.Unregister(this);
        _memory.RemoveCachingListener(Id);
        // Re-own held blocks first: from then on no release can commit a block to this pool (its check fails and it
        // frees the block to the system). A release that committed before gives its block to the pool and then reads
        // the flag: if it read it clear, it gave its block before the flag was set, into a core cache it still
        // holds or has put back, so wait until no core cache is held; one that read it set empties the pool itself.
        var (blocks, pages) = _memory.Disown(Id);
        foreach (var t in _types) t.AwaitIdleSlots();
        FreePooledAfterDispose();
        if (blocks > 0 && PagePoolEventSource.PoolOn) PagePoolEventSource.Log.PoolDisposedWithPagesHeld(Id, blocks, pages);
        lock (s_idLock) s_liveIds[Id] = false;
    }
}
