using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Shrinker;

namespace PagePool.Pool;

/// <summary>
/// The page pool (Linux's ttm_pool, in user space). Changing a page's caching costs a flush of every cache line
/// and a page-table change of its cached alias, so pages are kept per caching mode x order x zone once converted,
/// and handed out again without paying that cost. Allocation walks orders as __ttm_pool_alloc does; fresh pages
/// taken on a miss get their caching change deferred and applied as one batch per run.
/// </summary>
/// <remarks>
/// <para>Ownership: every block's metadata word says who holds it. A hit moves it Pooled -> Allocated with a
/// plain store (the taker popped it from a magazine it holds exclusively); a release moves it Allocated -> Pooled
/// by compare-and-swap, advancing the generation so the old handle goes stale. That CAS is what makes a double
/// free, a stale or foreign handle, or a release with the wrong caching or order a typed error before any state
/// changes, even when two threads race on one handle.</para>
/// <para>The pool limit is checked when a magazine moves into the depot, off the hit path; per-core magazines may
/// hold a bounded number of pages above it, like Linux's per-CPU page lists.</para>
/// </remarks>
public sealed unsafe class PoolAllocator : IShrinker, IDisposable, ICachingListener
{
    /// <summary>Pages freed per shrinker step (TTM's batch).</summary>
    public const int ShrinkBatch = 352;

    private const int Cachings = 3, Orders = PhysicalMemory.MaxOrder + 1, Zones = 2;
    // Bits of the metadata word a releasable block must match: state, caching, order, owner, low 24 generation bits.
    private const ulong ReleaseMask = (1UL << 48) - 1;

    private static int s_lastId;

    private readonly PhysicalMemory _memory;
    private readonly PoolOptions _options;
    private readonly PoolType[] _types;
    private readonly long _limitPages;
    private readonly bool _clearOnAllocate, _clearOnRelease;
    private long _depotPages;
    private readonly long[] _switchedInUse = new long[Cachings]; // held pages callers moved between modes
    private int _shrinkCursor, _limitShrinking, _disposed;

    /// <summary>The owner id this pool stamps on its blocks (1..65535).</summary>
    internal readonly int Id;

    /// <summary>A pool drawing pages from <paramref name="memory"/>.</summary>
    public PoolAllocator(PhysicalMemory memory, PoolOptions? options = null)
    {
        _memory = memory;
        _options = options ?? new PoolOptions();
        _options.Validate();
        _limitPages = _options.LimitBytes >> PhysicalMemory.PageShift;
        _clearOnAllocate = _options.Zeroing == ZeroPolicy.OnAllocate;
        _clearOnRelease = _options.Zeroing == ZeroPolicy.OnRelease;
        int id;
        do id = Interlocked.Increment(ref s_lastId) & 0xFFFF; while (id == 0);
        Id = id;

        int slots = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(2, Environment.ProcessorCount));
        _types = new PoolType[Zones * Cachings * Orders];
        for (int z = 0; z < Zones; z++)
            for (int c = 0; c < Cachings; c++)
                for (int o = 0; o < Orders; o++)
                {
                    int i = TypeIndex((CachingMode)c, o, (Zone)z);
                    _types[i] = new PoolType(this, i, (CachingMode)c, o, (Zone)z, slots, Math.Max(1, _options.MagazinePages >> o));
                }
        _memory.AddCachingListener(Id, this);
        PoolMeterSource.Register(this);
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
        long pages = Volatile.Read(ref _switchedInUse[(int)caching]);
        foreach (var t in _types) if (t.Caching == caching) pages += t.Snapshot().InUsePages;
        return pages;
    }

    /// <summary>The memory this pool draws from.</summary>
    public PhysicalMemory Memory => _memory;

    /// <summary>The options in force.</summary>
    public PoolOptions Options => _options;

    /// <inheritdoc/>
    public string Name => "pagepool";

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int TypeIndex(CachingMode c, int order, Zone z) => ((int)z * Cachings + (int)c) * Orders + order;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Pools(CachingMode c) => c != CachingMode.WriteBack || _options.PoolWriteBack;

    // ---- allocation -----------------------------------------------------------------------------------

    /// <summary>
    /// Allocate one 4 KiB page in the given caching mode. A pool hit is one atomic exchange, a store and a clear.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageHandle AllocatePage(CachingMode caching, Zone zone = Zone.Normal, AllocationFlags flags = AllocationFlags.None)
    {
        if ((uint)caching < Cachings && (uint)zone < Zones && _types[TypeIndex(caching, 0, zone)].TryTake(out ulong raw))
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
    /// Allocate <paramref name="pageCount"/> 4 KiB pages as blocks of orders 0..9 into <paramref name="blocks"/>
    /// and return how many blocks were written. The walk starts at the highest order that fits the remaining
    /// count and never goes back up; a pool miss takes a fresh block of that order from the system, and only when
    /// the system has none does it fall back to a smaller order (__ttm_pool_alloc). Fresh blocks are converted to
    /// <paramref name="caching"/> in batches, one per run of consecutive fresh blocks.
    /// On any error every block already taken is given back and nothing is written to the caller.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="blocks"/> filled before the count was reached; a span
    /// of <paramref name="pageCount"/> entries always suffices.</exception>
    /// <exception cref="ZoneExhaustedException">The zone has no page left.</exception>
    public int Allocate(int pageCount, CachingMode caching, Zone zone, Span<PageHandle> blocks, AllocationFlags flags = AllocationFlags.None)
    {
        if (pageCount <= 0)
            throw new ArgumentOutOfRangeException(nameof(pageCount), pageCount, "Allocate at least one page.");
        if ((uint)caching >= Cachings)
            throw new ArgumentOutOfRangeException(nameof(caching), caching, "Unknown caching mode.");
        if ((uint)zone >= Zones)
            throw new ArgumentOutOfRangeException(nameof(zone), zone, "Unknown zone.");
        ObjectDisposedException.ThrowIf(_disposed != 0, this);

        bool clear = _clearOnAllocate && (flags & AllocationFlags.NoClear) == 0;
        bool pooled = Pools(caching);
        int n = 0, remaining = pageCount, pending = -1;
        int order = Math.Min(PhysicalMemory.MaxOrder, BitOperations.Log2((uint)remaining));
        try
        {
            while (remaining > 0)
            {
                order = Math.Min(order, BitOperations.Log2((uint)remaining));
                if (n == blocks.Length)
                    throw new ArgumentException($"The span of {blocks.Length} handles filled before {pageCount} pages were allocated; pass a span of {pageCount} entries.", nameof(blocks));
                var type = _types[TypeIndex(caching, order, zone)];
                if (pooled && type.TryTake(out ulong raw))
                {
                    var h = _memory.HandleOf(raw);
                    TakeOwnership(h);
                    if (clear) PhysicalMemory.ClearAs(caching, _memory.ViewOf(h), (nuint)h.PageCount << PhysicalMemory.PageShift);
                    if (pending >= 0) { Convert(blocks[pending..n], caching, zone); pending = -1; }
                    if (PagePoolEventSource.HitPathOn) PagePoolEventSource.Log.PoolHit((int)caching, order);
                    blocks[n++] = h;
                }
                else if (_memory.TryAllocateBlock(zone, order, Id, out var fresh))
                {
                    type.CountMiss();
                    if (PagePoolEventSource.PoolOn) PagePoolEventSource.Log.PoolMiss((int)caching, order, (int)zone);
                    if (caching != CachingMode.WriteBack && pending < 0) pending = n;
                    blocks[n++] = fresh; // fresh blocks read zero: their memfd range is new or was punched out
                }
                else if (order > 0)
                {
                    order--;
                    continue;
                }
                else if (ReclaimZone(zone) == 0)
                {
                    if (PagePoolEventSource.MemoryOn) PagePoolEventSource.Log.ZoneExhausted((int)zone, 0);
                    throw new ZoneExhaustedException(zone, 0, _memory.Capacity(zone));
                }
                else
                {
                    // Direct reclaim freed pooled pages of other modes or orders: retry from the top order.
                    order = Math.Min(PhysicalMemory.MaxOrder, BitOperations.Log2((uint)remaining));
                    continue;
                }
                remaining -= 1 << order;
            }
            if (pending >= 0) Convert(blocks[pending..n], caching, zone);
            return n;
        }
        catch
        {
            // Everything taken so far is ours and consistent: hand it to the system (caching back to WB there).
            _memory.FreeBlocks(blocks[..n], Id);
            blocks[..n].Clear();
            throw;
        }
    }

    // Pooled -> Allocated. The taker popped the block from a magazine it held alone, so a plain store suffices;
    // a racing release of a stale handle compares the whole word and fails.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void TakeOwnership(PageHandle h)
    {
        ulong* m = _memory.MetaOf(h);
        Volatile.Write(ref *m, PageMeta.WithState(Volatile.Read(ref *m), PageState.Allocated));
    }

    // The deferred caching change of a run of fresh blocks: one batch, one fence.
    private void Convert(Span<PageHandle> fresh, CachingMode caching, Zone zone)
    {
        CachingTransition.Apply(_memory, fresh, caching);
        foreach (var h in fresh) _types[TypeIndex(caching, h.Order, zone)].CountTransitions(1);
    }

    // ---- release ---------------------------------------------------------------------------------------

    /// <summary>Give one block back. Same checks and guarantees as <see cref="Release"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReleasePage(PageHandle block, CachingMode caching)
    {
        ulong* m = _memory.Resolve(block, out var arena);
        ulong w = Volatile.Read(ref *m);
        ulong expect = PageMeta.Make(PageState.Allocated, caching, block.Order, Id, block.Generation);
        if ((w & ReleaseMask) != expect || Interlocked.CompareExchange(ref *m, PageMeta.NextGeneration(PageMeta.WithState(w, PageState.Pooled)), w) != w)
            ThrowReleaseError(block, caching);
        var released = block.WithGeneration(block.Generation + 1UL);
        if (_clearOnRelease)
            PhysicalMemory.ClearAs(caching, arena.View + ((nuint)block.Page << PhysicalMemory.PageShift), (nuint)block.PageCount << PhysicalMemory.PageShift);
        if (Pools(caching)) _types[TypeIndex(caching, block.Order, arena.Zone)].Give(released.Value);
        else ReturnToSystem([released], caching);
    }

    /// <summary>
    /// Give blocks back to their pool types (caching as stated, order as in each handle). Every handle is checked
    /// first: a double free, a stale handle, a handle of another pool or memory space, or a caching or order that
    /// does not match the block raises <see cref="PageHandleException"/> and nothing has changed. Write-back blocks
    /// go to the system when <see cref="PoolOptions.PoolWriteBack"/> is off; beyond the limit the excess goes too.
    /// </summary>
    public void Release(ReadOnlySpan<PageHandle> blocks, CachingMode caching)
    {
        foreach (var h in blocks)
        {
            ulong w = Volatile.Read(ref *_memory.Resolve(h, out _));
            if ((w & ReleaseMask) != PageMeta.Make(PageState.Allocated, caching, h.Order, Id, h.Generation))
                ThrowReleaseError(h, caching);
        }

        // Commit all or nothing: a handle repeated in the span, or raced by another thread, undoes the rest.
        Span<ulong> old = blocks.Length <= 256 ? stackalloc ulong[blocks.Length] : new ulong[blocks.Length];
        for (int i = 0; i < blocks.Length; i++)
        {
            ulong* m = _memory.MetaOf(blocks[i]);
            ulong w = old[i] = Volatile.Read(ref *m);
            bool ok = (w & ReleaseMask) == PageMeta.Make(PageState.Allocated, caching, blocks[i].Order, Id, blocks[i].Generation)
                      && Interlocked.CompareExchange(ref *m, PageMeta.NextGeneration(PageMeta.WithState(w, PageState.Pooled)), w) == w;
            if (!ok)
            {
                for (int k = 0; k < i; k++) Volatile.Write(ref *_memory.MetaOf(blocks[k]), old[k]);
                if (blocks[..i].Contains(blocks[i]))
                    throw new PageHandleException(blocks[i], HandleError.DoubleFree, "The handle appears twice in one release; nothing was released.");
                ThrowReleaseError(blocks[i], caching);
            }
        }

        bool pooled = Pools(caching);
        foreach (var h in blocks)
        {
            var released = h.WithGeneration(h.Generation + 1UL);
            if (_clearOnRelease)
                PhysicalMemory.ClearAs(caching, _memory.ViewOf(h), (nuint)h.PageCount << PhysicalMemory.PageShift);
            if (pooled) _types[TypeIndex(caching, h.Order, _memory.ArenaOf(h).Zone)].Give(released.Value);
        }
        if (!pooled)
        {
            var released = new PageHandle[blocks.Length];
            for (int i = 0; i < blocks.Length; i++) released[i] = blocks[i].WithGeneration(blocks[i].Generation + 1UL);
            ReturnToSystem(released, caching);
        }
    }

    // Out of line: say exactly what was wrong with a handle that failed the release check.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowReleaseError(PageHandle h, CachingMode caching)
    {
        ulong w = _memory.ResolveLive(h, out _); // throws for stale, double free, malformed, foreign space, order
        if (PageMeta.Owner(w) != Id)
            throw new PageHandleException(h, HandleError.Foreign, $"The block belongs to pool {PageMeta.Owner(w)}, not to this pool ({Id}).");
        if (PageMeta.State(w) != PageState.Allocated)
            throw new PageHandleException(h, HandleError.WrongState, "The block is pooled, not held by a caller.");
        if (PageMeta.Caching(w) != caching)
            throw new PageHandleException(h, HandleError.Mismatch, $"The block is {PageMeta.Caching(w)}, released as {caching}: it would land in the wrong pool (seeds/000).");
        throw new PageHandleException(h, HandleError.Stale, "Another thread released this block at the same time.");
    }

    // ---- giving memory back -----------------------------------------------------------------------------

    // Released blocks that are not kept (write-back with PoolWriteBack off) go straight to the system.
    private void ReturnToSystem(ReadOnlySpan<PageHandle> blocks, CachingMode caching)
    {
        _memory.FreeBlocks(blocks, Id);
        foreach (var h in blocks) _types[TypeIndex(caching, h.Order, _memory.ArenaOf(h).Zone)].CountGivenToSystem();
    }

    // The zone is out of pages: free what this pool keeps of it (any caching, any order), as the kernel's direct
    // reclaim runs the shrinkers before failing an allocation. Returns the pages freed.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private long ReclaimZone(Zone zone)
    {
        long freed = 0;
        Span<ulong> batch = stackalloc ulong[ShrinkBatch];
        foreach (var t in _types)
        {
            if (t.Zone != zone) continue;
            int n;
            while ((n = t.Drain(batch, Math.Max(1, ShrinkBatch >> t.Order))) > 0)
            {
                FreeDrained(t, batch[..n]);
                freed += (long)n << t.Order;
            }
        }
        return freed;
    }

    // Blocks drained from a pool type go to the system: caching back to WB in one batch, memory punched out.
    private void FreeDrained(PoolType t, Span<ulong> drained)
    {
        _memory.FreeBlocks(MemoryMarshal.Cast<ulong, PageHandle>(drained), Id);
        t.CountReturned(drained.Length);
        if (t.Caching != CachingMode.WriteBack) t.CountTransitions(drained.Length);
    }

    /// <summary>Called by pool types when depot contents change; over the limit, shrink back to it.</summary>
    internal void DepotChanged(long pages)
    {
        long now = Interlocked.Add(ref _depotPages, pages);
        if (pages > 0 && now > _limitPages) ShrinkToLimit();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ShrinkToLimit()
    {
        if (Interlocked.CompareExchange(ref _limitShrinking, 1, 0) != 0) return; // one thread trims at a time
        try
        {
            long excess, freed = 0, over = Volatile.Read(ref _depotPages);
            while ((excess = Volatile.Read(ref _depotPages) - _limitPages) > 0)
            {
                long n = Scan(excess);
                if (n == 0) break;
                freed += n;
            }
            if (PagePoolEventSource.PoolOn) PagePoolEventSource.Log.PoolLimitHit(over, _limitPages, freed);
        }
        finally
        {
            Volatile.Write(ref _limitShrinking, 0);
        }
    }

    /// <summary>Pages pooled now, in all types (the shrinker's count; racy by nature).</summary>
    public long Count()
    {
        long pages = 0;
        foreach (var t in _types) pages += t.PooledBlocks() << t.Order;
        return pages;
    }

    /// <summary>
    /// Free at least <paramref name="toScan"/> pooled pages when that many exist: batches of
    /// <see cref="ShrinkBatch"/> pages, round-robin over pool types, caching back to write-back and memory
    /// returned to the system. Returns the pages freed.
    /// </summary>
    public long Scan(long toScan)
    {
        long t0 = PagePoolEventSource.ShrinkerOn ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
        long freed = Drain(toScan);
        if (t0 != 0)
            PagePoolEventSource.Log.ShrinkerScan(Name, toScan, freed, (long)System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
        return freed;
    }

    private long Drain(long toScan)
    {
        long freed = 0;
        int idle = 0;
        Span<ulong> batch = stackalloc ulong[ShrinkBatch];
        while (freed < toScan && idle < _types.Length)
        {
            var t = _types[(uint)Interlocked.Increment(ref _shrinkCursor) % (uint)_types.Length];
            int n = t.Drain(batch, Math.Max(1, ShrinkBatch >> t.Order));
            if (n == 0) { idle++; continue; }
            idle = 0;
            FreeDrained(t, batch[..n]);
            freed += (long)n << t.Order;
        }
        return freed;
    }

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
        if (pages != Count())
            throw new InvalidOperationException($"Count() says {Count()} pages pooled, the magazines hold {pages}.");
        return pages;
    }

    /// <summary>Give every pooled page back to the system. Pages callers still hold stay valid in the memory space.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        PoolMeterSource.Unregister(this);
        _memory.RemoveCachingListener(Id);
        while (Scan(long.MaxValue) > 0) { }
    }
}
