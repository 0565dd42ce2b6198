using PagePool.Memory;
using PagePool.Pool;
using PagePool.Shrinker;

namespace PagePool.Tt;

/// <summary>
/// The page limits of buffers and their least-recently-used list (TTM's ttm_pages_allocated, the DMA32 count and
/// the swap LRU). Populating a <see cref="PageArray"/> charges its pages here; over a limit, the least recently used
/// idle buffers are swapped out (or purged, when their contents are disposable) until the pages fit, and when nothing
/// can go the populate fails with <see cref="TtOutOfMemoryException"/> having changed nothing.
/// </summary>
/// <remarks>
/// <para>Locks: each array has its own lock; this class has one for the counts and the list. A thread may take the
/// list lock while it holds an array's lock, never the reverse: victims are taken with a try-lock (TTM's
/// dma_resv_trylock in ttm_bo_swapout), so a busy buffer is skipped instead of waited for, and no cycle can form.</para>
/// <para>Only populated, unbound arrays with resident pages are on the list: a bound buffer is in use by a device.</para>
/// <para>As an <see cref="IShrinker"/>, <see cref="Count"/> is the resident pages of listed buffers and
/// <see cref="Scan"/> swaps them out from the cold end, for the reclaim thread to call under pressure.</para>
/// </remarks>
public sealed class BufferAccounting : IShrinker
{
    private readonly Lock _lock = new();
    private readonly LinkedList<PageArray> _lru = new();
    private long _pages, _dma32Pages, _swappedOut, _swappedIn, _evictions;

    /// <summary>Accounting for arrays drawing pages from <paramref name="pool"/> and swapping to <paramref name="store"/>.</summary>
    public BufferAccounting(PoolAllocator pool, SwapStore store, AccountingOptions? options = null)
    {
        Pool = pool;
        Store = store;
        Options = options ?? new AccountingOptions();
        Options.Validate();
        PageLimit = Options.PageLimitBytes >> PhysicalMemory.PageShift;
        Dma32PageLimit = Options.Dma32LimitBytes >> PhysicalMemory.PageShift;
    }

    /// <summary>The pool pages come from.</summary>
    public PoolAllocator Pool { get; }

    /// <summary>The store swapped pages go to.</summary>
    public SwapStore Store { get; }

    /// <summary>The options in force.</summary>
    public AccountingOptions Options { get; }

    /// <summary>Resident buffer pages allowed at once.</summary>
    public long PageLimit { get; }

    /// <summary>Resident DMA32 buffer pages allowed at once.</summary>
    public long Dma32PageLimit { get; }

    /// <summary>Resident buffer pages charged now (external pages are not charged).</summary>
    public long Pages => Volatile.Read(ref _pages);

    /// <summary>Resident DMA32 buffer pages charged now.</summary>
    public long Dma32Pages => Volatile.Read(ref _dma32Pages);

    /// <summary>Bytes swapped out since this accounting was made.</summary>
    public long BytesSwappedOut => Volatile.Read(ref _swappedOut);

    /// <summary>Bytes swapped back in since this accounting was made.</summary>
    public long BytesSwappedIn => Volatile.Read(ref _swappedIn);

    /// <summary>Buffers swapped out or purged to make room or under pressure (not by their owners).</summary>
    public long Evictions => Volatile.Read(ref _evictions);

    /// <inheritdoc/>
    public string Name => "pagepool-buffers";

    // ---- charging ------------------------------------------------------------------------------------

    /// <summary>
    /// Charge <paramref name="pages"/> of <paramref name="zone"/> for <paramref name="owner"/> (whose lock the caller
    /// holds), swapping out least recently used buffers while over a limit. Throws having charged nothing.
    /// </summary>
    internal void Charge(PageArray owner, long pages, Zone zone)
    {
        bool dma32 = zone == Zone.Dma32;
        if (pages > PageLimit)
            throw new TtOutOfMemoryException(pages, PageLimit, "buffer page", null);
        if (dma32 && pages > Dma32PageLimit)
            throw new TtOutOfMemoryException(pages, Dma32PageLimit, "DMA32 buffer page", null);
        HashSet<PageArray>? failed = null;
        Exception? lastFailure = null;
        while (true)
        {
            PageArray? victim;
            lock (_lock)
            {
                bool overAll = _pages + pages > PageLimit, overDma32 = dma32 && _dma32Pages + pages > Dma32PageLimit;
                if (!overAll && !overDma32)
                {
                    _pages += pages;
                    if (dma32) _dma32Pages += pages;
                    return;
                }
                // When only DMA32 is short, only a buffer holding DMA32 pages helps.
                victim = TakeVictim(owner, failed, needDma32: overDma32 && !overAll);
                if (victim is null)
                    throw overDma32
                        ? new TtOutOfMemoryException(pages, Dma32PageLimit, "DMA32 buffer page", lastFailure)
                        : new TtOutOfMemoryException(pages, PageLimit, "buffer page", lastFailure);
            }
            try
            {
                victim.EvictLocked();
                Interlocked.Increment(ref _evictions);
            }
            catch (PagePoolException e)
            {
                (failed ??= new()).Add(victim); // a full store: try the next buffer, then give up
                lastFailure = e;
            }
            finally
            {
                victim.Gate.Exit();
            }
        }
    }

    /// <summary>Give back a charge (pages freed or swapped out).</summary>
    internal void Uncharge(long pages, Zone zone)
    {
        lock (_lock)
        {
            _pages -= pages;
            if (zone == Zone.Dma32) _dma32Pages -= pages;
        }
    }

    // The least recently used listed buffer whose lock is free, locked for the caller. Under the list lock.
    private PageArray? TakeVictim(PageArray? except, HashSet<PageArray>? skip, bool needDma32)
    {
        for (var node = _lru.First; node is not null; node = node.Next)
        {
            var t = node.Value;
            if (t == except || (skip is not null && skip.Contains(t)) || (needDma32 && t.Zone != Zone.Dma32)) continue;
            if (t.IsReserved || t.Gate.IsHeldByCurrentThread) continue; // in use, not idle
            if (!t.Gate.TryEnter()) continue;
            if (!t.IsReserved) return t; // checked again under the lock: a reservation taken meanwhile waits for this eviction
            t.Gate.Exit();
        }
        return null;
    }

    // ---- the LRU ---------------------------------------------------------------------------------------

    /// <summary>Put an array at the hot end of the list (it was just used), adding it if absent.</summary>
    internal void Touch(PageArray t)
    {
        lock (_lock)
        {
            if (t.LruNode is { List: not null } n) _lru.Remove(n);
            else t.LruNode ??= new LinkedListNode<PageArray>(t);
            _lru.AddLast(t.LruNode);
        }
    }

    /// <summary>Take an array off the list (no resident pages left, bound, or destroyed).</summary>
    internal void Remove(PageArray t)
    {
        lock (_lock)
        {
            if (t.LruNode is { List: not null } n) _lru.Remove(n);
        }
    }

    internal void CountSwapOut(long bytes) => Interlocked.Add(ref _swappedOut, bytes);

    internal void CountSwapIn(long bytes) => Interlocked.Add(ref _swappedIn, bytes);

    /// <summary>Buffers on the list, coldest first (tests and diagnostics; a snapshot).</summary>
    internal PageArray[] LruSnapshot()
    {
        lock (_lock) return _lru.ToArray();
    }

    // ---- the shrinker ------------------------------------------------------------------------------------

    /// <summary>Resident pages of the idle buffers on the list: what <see cref="Scan"/> could free.</summary>
    public long Count()
    {
        lock (_lock)
        {
            long pages = 0;
            foreach (var t in _lru) pages += t.ResidentPages;
            return pages;
        }
    }

    /// <summary>Swap out (or purge) least recently used idle buffers until <paramref name="toScan"/> pages are freed or none is left.</summary>
    public long Scan(long toScan)
    {
        long freed = 0;
        HashSet<PageArray>? done = null;
        while (freed < toScan)
        {
            PageArray? victim;
            lock (_lock) victim = TakeVictim(null, done, needDma32: false);
            if (victim is null) break;
            try
            {
                freed += victim.EvictLocked();
                Interlocked.Increment(ref _evictions);
            }
            catch (PagePoolException)
            {
                // The store is full or failing: this buffer keeps its pages; try the others.
            }
            finally
            {
                victim.Gate.Exit();
            }
            (done ??= new()).Add(victim);
        }
        return freed;
    }
}
