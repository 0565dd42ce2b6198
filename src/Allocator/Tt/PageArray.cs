using PagePool.Diagnostics;
using PagePool.Dma;
using PagePool.Memory;
using PagePool.Native;
using PagePool.Pool;

namespace PagePool.Tt;

/// <summary>
/// The page array of one buffer (TTM's ttm_tt): its size, caching mode and flags, and where its pages are. Pages come
/// from the pool in the buffer's caching mode at <see cref="Populate"/>; the array can be bound to a device, swapped
/// out to the store (whole or in part) and brought back at the next populate, or purged.
/// </summary>
/// <remarks>
/// <para>States and the calls between them: Unpopulated -Populate-> Populated -Bind-> Bound -Unbind-> Populated;
/// Populated -SwapOut-> SwappedOut -Populate-> Populated; Populated or SwappedOut -Unpopulate/Purge-> Unpopulated.
/// Any other call raises <see cref="TtStateException"/> and changes nothing. Dispose is legal in every state.</para>
/// <para>A swap-out is all or nothing: it writes 8 MiB at a time and gives each part's pages back while the next is
/// written; when a later write fails (a full disk), the parts already given back are read back into new pages, so the
/// buffer ends as it was, every byte in place. A restore reads batch by batch and keeps every batch it
/// finished: interrupted (a failed read, a cancellation, no memory), the array stays SwappedOut with fewer pages in
/// the store, and the next populate resumes (modern TTM's ttm_pool_restore_and_alloc).</para>
/// <para>Every call takes the array's lock: one thread at a time changes an array; the accounting's reclaim skips an
/// array whose lock is held.</para>
/// </remarks>
public sealed unsafe class PageArray : IDisposable
{
    private readonly BufferAccounting _accounting;
    private readonly PhysicalMemory _memory;
    private TtSegment[] _segments = [];
    private ITtBindTarget? _target;
    private DmaDevice? _device;
    private DmaScatterlist? _mapped; // the device binding's streaming mapping
    private DmaDirection _mappedDirection;
    private ulong[]? _dma;
    private long _swappedPages;
    private bool _disposed;
    private CpuMapping? _cpu;
    private VramRegion? _vram;
    private long _vramPage = -1;

    internal readonly Lock Gate = new(); // held for the duration of one call, never past it
    private readonly SemaphoreSlim _reservation = new(1, 1); // not thread-affine: a reservation is a token
    private object? _reservedBy; // the ticket of the reservation held now
    internal LinkedListNode<PageArray>? LruNode;

    /// <summary>An unpopulated array of <paramref name="pageCount"/> pages charged to <paramref name="accounting"/>.</summary>
    public PageArray(BufferAccounting accounting, int pageCount, CachingMode caching, Zone zone = Zone.Normal, TtFlags flags = TtFlags.None)
    {
        ArgumentNullException.ThrowIfNull(accounting);
        if (pageCount <= 0)
            throw new ArgumentOutOfRangeException(nameof(pageCount), pageCount, "A buffer has at least one page.");
        if (!Enum.IsDefined(caching)) throw new ArgumentOutOfRangeException(nameof(caching), caching, "Unknown caching mode.");
        if (!Enum.IsDefined(zone)) throw new ArgumentOutOfRangeException(nameof(zone), zone, "Unknown zone.");
        if ((flags & TtFlags.External) != 0)
            throw new ArgumentException("External pages are given, not allocated: use PageArray.FromExternal.", nameof(flags));
        _accounting = accounting;
        _memory = accounting.Pool.Memory;
        PageCount = pageCount;
        Caching = caching;
        Zone = zone;
        Flags = flags;
    }

    private PageArray(BufferAccounting accounting, TtSegment[] segments, int pageCount, CachingMode caching, Zone zone)
    {
        _accounting = accounting;
        _memory = accounting.Pool.Memory;
        _segments = segments;
        PageCount = pageCount;
        Caching = caching;
        Zone = zone;
        Flags = TtFlags.External;
        State = TtState.Populated;
    }

    /// <summary>
    /// An array over pages someone else owns (an imported buffer): populated from the start, never charged, never
    /// swapped, and not given back on dispose. The blocks must be held by the caller in <paramref name="caching"/>.
    /// </summary>
    public static PageArray FromExternal(BufferAccounting accounting, ReadOnlySpan<PageHandle> blocks, CachingMode caching)
    {
        ArgumentNullException.ThrowIfNull(accounting);
        if (blocks.IsEmpty) throw new ArgumentException("An external buffer has at least one block.", nameof(blocks));
        var segments = new TtSegment[blocks.Length];
        int page = 0;
        var memory = accounting.Pool.Memory;
        var zone = memory.ZoneOf(blocks[0]);
        for (int i = 0; i < blocks.Length; i++)
        {
            if (memory.CachingOf(blocks[i]) != caching)
                throw new ArgumentException($"Block {blocks[i]} is {memory.CachingOf(blocks[i])}, not {caching}.", nameof(blocks));
            segments[i] = new TtSegment(page, blocks[i].PageCount) { Blocks = [blocks[i]] };
            page += blocks[i].PageCount;
        }
        return new PageArray(accounting, segments, page, caching, zone);
    }

    /// <summary>Pages in the buffer.</summary>
    public int PageCount { get; }

    /// <summary>Bytes in the buffer.</summary>
    public long Bytes => (long)PageCount << PhysicalMemory.PageShift;

    /// <summary>The caching mode its pages are allocated in.</summary>
    public CachingMode Caching { get; }

    /// <summary>The zone its pages come from (DMA32 after a bind to a device that cannot reach higher).</summary>
    public Zone Zone { get; private set; }

    /// <summary>The flags it was made with.</summary>
    public TtFlags Flags { get; }

    /// <summary>Where its pages are.</summary>
    public TtState State { get; private set; }

    /// <summary>Pages now in the swap store (all of them after a full swap-out, fewer after a partial one or an interrupted restore).</summary>
    public long SwappedPages => Volatile.Read(ref _swappedPages);

    /// <summary>Pages now resident in memory.</summary>
    public long ResidentPages => State == TtState.Unpopulated ? 0 : PageCount - SwappedPages;

    /// <summary>The device it is bound to, or null.</summary>
    public ITtBindTarget? BoundTo => _target;

    /// <summary>The DMA layer device it is bound to, or null.</summary>
    public DmaDevice? BoundDevice => _device;

    /// <summary>
    /// True in the "anonymous" state: the pages belong to no device (resident in system memory, or in the swap
    /// store), so any device may take them and they may go to the swap store. False in the device state (bound: a
    /// device holds DMA addresses of the pages, which may have been copied to pages that device can address), in
    /// device-local memory, and with no pages at all.
    /// </summary>
    public bool IsAnonymous => State is TtState.Populated or TtState.SwappedOut;

    private string BoundName => _device?.Name ?? _target?.Name ?? "its device";

    private bool IsExternal => (Flags & TtFlags.External) != 0;

    // ---- populate / unpopulate -------------------------------------------------------------------------

    /// <summary>
    /// Give the buffer its pages: allocate them (Unpopulated), or bring back what is in the swap store (SwappedOut),
    /// resuming an earlier restore that was interrupted. Over a page limit, least recently used buffers are swapped
    /// out first. On failure the buffer is as before, less the restore batches that completed.
    /// </summary>
    /// <exception cref="TtOutOfMemoryException">Over a limit with nothing left to swap out.</exception>
    /// <exception cref="SwapStoreException">The store could not be read; populate again to resume.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancel"/> fired between two restore batches; populate again to resume.</exception>
    public void Populate(CancellationToken cancel = default)
    {
        lock (Gate)
        {
            Live();
            if (State is not (TtState.Unpopulated or TtState.SwappedOut))
                throw new TtStateException("populate", State, State == TtState.DeviceLocal ? "its contents are in VRAM; use MoveToSystem." : "it already has its pages.");
            try
            {
                if (State == TtState.Unpopulated) Allocate();
                else Restore(cancel);
            }
            finally
            {
                // Restored batches of an interrupted restore are resident: they can be swapped out again.
                if (ResidentPagesOf() > 0) _accounting.Touch(this);
            }
        }
    }

    private void Allocate()
    {
        _accounting.Charge(this, PageCount, Zone);
        var blocks = new PageHandle[PageCount];
        int n;
        try
        {
            n = _accounting.Pool.Allocate(PageCount, Caching, Zone, blocks, (Flags & TtFlags.ZeroAlloc) != 0 ? AllocationFlags.None : AllocationFlags.NoClear);
        }
        catch
        {
            _accounting.Uncharge(PageCount, Zone);
            throw;
        }
        _segments = SegmentsOf(blocks.AsSpan(0, n));
        State = TtState.Populated;
        MapAllResident();
    }

    private void MapAllResident()
    {
        if (_cpu is null) return;
        foreach (var seg in _segments) if (seg.Resident) _cpu.MapResident(_memory, seg);
    }

    // Read back every backed-up segment, batch by batch; each finished batch stays restored whatever happens next.
    private void Restore(CancellationToken cancel)
    {
        long pending = _swappedPages, started = pending, t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        _accounting.Charge(this, pending, Zone);
        long batchLimit = Math.Max(PhysicalMemory.PageSize, _accounting.Options.RestoreBatchBytes);
        try
        {
            int i = 0;
            while (i < _segments.Length)
            {
                if (_segments[i].Resident) { i++; continue; }
                cancel.ThrowIfCancellationRequested();
                // A batch: consecutive backed-up segments whose extents follow each other in the store.
                int end = i + 1;
                long bytes = _segments[i].Bytes;
                while (end < _segments.Length && !_segments[end].Resident
                       && _segments[end].SwapOffset == _segments[end - 1].SwapOffset + _segments[end - 1].Bytes
                       && bytes + _segments[end].Bytes <= batchLimit)
                    bytes += _segments[end++].Bytes;
                RestoreBatch(i, end, bytes);
                long pages = bytes >> PhysicalMemory.PageShift;
                pending -= pages;
                Volatile.Write(ref _swappedPages, _swappedPages - pages);
                i = end;
            }
            State = TtState.Populated;
        }
        finally
        {
            if (pending != 0) _accounting.Uncharge(pending, Zone);
            if (started != pending && PagePoolEventSource.Log.SwapOn)
                PagePoolEventSource.Log.SwapIn(started - pending, (started - pending) << PhysicalMemory.PageShift,
                    (long)System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
        }
    }

    private void RestoreBatch(int first, int end, long bytes)
    {
        var pool = _accounting.Pool;
        var taken = new PageHandle[end - first][];
        var vectors = new List<IoVec>();
        try
        {
            for (int s = first; s < end; s++)
            {
                var seg = _segments[s];
                var blocks = new PageHandle[seg.Pages];
                int n = pool.Allocate(seg.Pages, Caching, Zone, blocks, AllocationFlags.NoClear); // every byte is read over
                taken[s - first] = blocks[..n];
                foreach (var h in taken[s - first]) vectors.Add(new IoVec { Base = _memory.ViewOf(h), Length = (nuint)h.PageCount << PhysicalMemory.PageShift });
            }
            var v = vectors.ToArray();
            // The next batch of this restore reads on from where this one ends: the kernel's readahead may run into it.
            bool continues = end < _segments.Length && !_segments[end].Resident && _segments[end].SwapOffset == _segments[first].SwapOffset + bytes;
            _accounting.Store.Read(_segments[first].SwapOffset, v, bytes, continues);
        }
        catch
        {
            foreach (var blocks in taken) if (blocks is not null) pool.Release(blocks, Caching);
            throw;
        }
        if (_cpu is not null) MapRestored(first, end, taken, bytes);
        _accounting.Store.Free(_segments[first].SwapOffset, bytes); // the batch is one extent: one call, one punch at most
        for (int s = first; s < end; s++)
        {
            var seg = _segments[s];
            seg.Blocks = taken[s - first];
            seg.SwapOffset = -1;
        }
        _accounting.CountSwapIn(bytes);
    }

    // Map a batch's new pages into the CPU range while the store still holds the batch. A mapping call can fail (mremap
    // ENOMEM: the process is out of mappings): the range is made absent again, the pages go back to the pool, and the
    // batch stays in the store, as after a failed read. Should making the range absent fail too, the pages are left
    // out of the pool (the range may still show some of them) and the store keeps the bytes: nothing is lost or aliased.
    private void MapRestored(int first, int end, PageHandle[][] taken, long bytes)
    {
        try
        {
            for (int s = first; s < end; s++) _cpu!.MapResident(_memory, _segments[s].FirstPage, taken[s - first]);
        }
        catch
        {
            _cpu!.MapAbsent(_segments[first].FirstPage, bytes >> PhysicalMemory.PageShift);
            foreach (var blocks in taken) _accounting.Pool.Release(blocks, Caching);
            throw;
        }
    }

    /// <summary>Give the pages back to the pool (Populated), or drop the backup (SwappedOut). The contents are gone.</summary>
    public void Unpopulate() => Drop("unpopulate", "its pages are external; dispose the array and give them back yourself.", toSystem: false);

    /// <summary>
    /// Free the pages without a backup (their contents are disposable): TTM's purge. Legal where <see cref="Unpopulate"/>
    /// is. The pages go straight back to the system in one batch, not into the pool: a purge is for freeing memory.
    /// </summary>
    public void Purge() => Drop("purge", "its pages are external.", toSystem: true);

    // Unpopulate and purge are one transition (TTM keeps both names): checked, then everything dropped; they differ
    // only in where the pages go, the pool (to be reused) or the system (to free memory).
    private void Drop(string operation, string externalAdvice, bool toSystem)
    {
        lock (Gate)
        {
            Live();
            if (State is not (TtState.Populated or TtState.SwappedOut))
                throw new TtStateException(operation, State, State == TtState.Bound ? "unbind it from its device first." : "it has no pages.");
            if (IsExternal) throw new TtStateException(operation, State, externalAdvice);
            DropEverything(toSystem);
        }
    }

    // Resident blocks to the pool, backed-up extents to the store: Unpopulated, nothing charged, off the list.
    private void DropEverything(bool toSystem)
    {
        _cpu?.MapAbsent(0, PageCount); // the CPU mapping lets go before the pages can be handed to anyone else
        if (toSystem && !IsExternal)
        {
            // One batch to the system first: should it fail, nothing has changed yet and the buffer keeps its pages.
            var blocks = new List<PageHandle>();
            foreach (var seg in _segments) if (seg.Resident) blocks.AddRange(seg.Blocks!);
            try
            {
                _accounting.Pool.ReleaseToSystem(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(blocks), Caching);
            }
            catch
            {
                MapAllResident();
                throw;
            }
        }
        _accounting.Remove(this);
        long resident = 0;
        foreach (var seg in _segments)
        {
            if (seg.Resident)
            {
                if (!IsExternal && !toSystem) _accounting.Pool.Release(seg.Blocks, Caching);
                resident += seg.Pages;
                seg.Blocks = null;
            }
            else if (seg.SwapOffset >= 0)
            {
                _accounting.Store.Free(seg.SwapOffset, seg.Bytes);
                seg.SwapOffset = -1;
            }
        }
        if (!IsExternal) _accounting.Uncharge(resident, Zone);
        _segments = [];
        Volatile.Write(ref _swappedPages, 0);
        State = TtState.Unpopulated;
    }

    // ---- swap --------------------------------------------------------------------------------------------

    /// <summary>
    /// Copy up to <paramref name="maxPages"/> resident pages (whole blocks that fit, first to last) to the swap store and free
    /// them: a partial backup when fewer than all. All or nothing: if a write fails, no page was freed.
    /// Returns the pages swapped out.
    /// </summary>
    /// <exception cref="SwapStoreException">The store refused the bytes (a full disk); the buffer keeps its pages.</exception>
    public long SwapOut(long maxPages = long.MaxValue)
    {
        lock (Gate)
        {
            Live();
            if (State == TtState.DeviceLocal) MoveToSystem(); // VRAM cannot go to the store directly: hop through system memory
            if (State is not (TtState.Populated or TtState.SwappedOut) || IsExternal)
                throw new TtStateException("swap out", State, IsExternal ? "its pages are external and cannot be swapped."
                    : State == TtState.Bound ? "unbind it from its device first." : "it has no pages.");
            if (maxPages < 0) throw new ArgumentOutOfRangeException(nameof(maxPages), maxPages, "Swap out zero pages or more.");
            return Backup(maxPages);
        }
    }

    /// <summary>
    /// Bytes a swap-out writes at a time. Each part's pages go back to the system while the next part is written: the
    /// punch of 64 MiB of shmem pages takes 15-19 ms of CPU on this machine, and the disk meanwhile has the next
    /// write; a part written is not freed until it is on the disk, and a failure later on brings it back (below).
    /// </summary>
    internal const long BackupPartBytes = 8L << 20;

    private long Backup(long maxPages)
    {
        var chosen = new List<int>(); // indexes into _segments, in order
        long pages = 0;
        for (int i = 0; i < _segments.Length; i++)
        {
            var seg = _segments[i];
            if (!seg.Resident) continue;
            if (pages + seg.Pages > maxPages) continue; // a smaller block further on may still fit
            chosen.Add(i);
            pages += seg.Pages;
        }
        if (pages == 0) return 0;
        long bytes = pages << PhysicalMemory.PageShift, t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        var store = _accounting.Store;
        long offset = store.ReserveExtent(bytes);
        var release = new SystemRelease(_accounting.Pool, Caching);
        var parts = new List<(int First, int End, long Offset, long Bytes)>(); // ranges of `chosen`, each handed to `release` once written
        Exception? failure = null;
        long at = offset;
        try
        {
            for (int first = 0; first < chosen.Count;)
            {
                int end = first;
                long partBytes = 0;
                var vectors = new List<IoVec>();
                var blocks = new List<PageHandle>();
                while (end < chosen.Count && (partBytes == 0 || partBytes + _segments[chosen[end]].Bytes <= BackupPartBytes))
                {
                    var seg = _segments[chosen[end++]];
                    partBytes += seg.Bytes;
                    foreach (var h in seg.Blocks!)
                    {
                        vectors.Add(new IoVec { Base = _memory.ViewOf(h), Length = (nuint)h.PageCount << PhysicalMemory.PageShift });
                        blocks.Add(h);
                    }
                }
                store.WritePart(at, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(vectors), partBytes);
                // On the disk: the part's pages go straight back to the system (not into the pool, or swapping would
                // free nothing), on another thread while this one writes the next part. The CPU mapping lets go first;
                // the part is recorded before, so a roll back maps it again should that fail half way.
                parts.Add((first, end, at, partBytes));
                for (int k = first; k < end; k++) _cpu?.MapAbsent(_segments[chosen[k]].FirstPage, _segments[chosen[k]].Pages);
                release.Add(blocks.ToArray(), helped: end < chosen.Count); // the last has no write to overlap: Finish gives it back here
                at += partBytes;
                first = end;
            }
        }
        catch (Exception e) // a failed write, or anything else: nothing may stay half given back
        {
            failure = e;
        }
        bool[] released = release.Finish(out var releaseFailure);
        failure ??= releaseFailure;
        if (failure is not null)
        {
            RollBack(chosen, parts, released, offset, bytes);
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }

        at = offset;
        foreach (int i in chosen)
        {
            var seg = _segments[i];
            seg.Blocks = null;
            seg.SwapOffset = at;
            at += seg.Bytes;
        }
        _accounting.Uncharge(pages, Zone);
        _accounting.CountSwapOut(bytes);
        Volatile.Write(ref _swappedPages, _swappedPages + pages);
        State = TtState.SwappedOut;
        if (ResidentPagesOf() == 0) _accounting.Remove(this);
        if (PagePoolEventSource.Log.SwapOn)
            PagePoolEventSource.Log.SwapOut(pages, bytes, (long)System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
        return pages;
    }

    // A swap-out failed part way (a write, or giving a part's pages back): the buffer ends as it was. Parts whose
    // pages went back are on the disk: they are read back into new pages (a restore of just those segments); parts
    // whose pages are still held keep them; the extent is given back. Should the read back fail too, those segments
    // stay in the store, the buffer is SwappedOut in part, and the next populate brings them back: no byte is lost.
    private void RollBack(List<int> chosen, List<(int First, int End, long Offset, long Bytes)> parts, bool[] released, long offset, long bytes)
    {
        var store = _accounting.Store;
        var backups = new List<(int Index, long Offset)>();
        long written = offset; // the end of the last part written
        for (int p = 0; p < parts.Count; p++)
        {
            var (first, end, at, partBytes) = parts[p];
            bool gone = p < released.Length && released[p]; // the last part may not have reached `release`
            if (!gone) store.Free(at, partBytes); // its pages are still ours: its copy goes
            written = at + partBytes;
            for (int k = first; k < end; k++)
            {
                var seg = _segments[chosen[k]];
                if (gone)
                {
                    seg.Blocks = null;
                    seg.SwapOffset = at;
                    backups.Add((chosen[k], at));
                }
                else _cpu?.MapResident(_memory, seg); // its pages are still ours: map them again
                at += seg.Bytes;
            }
        }
        if (offset + bytes > written) store.Free(written, offset + bytes - written); // never written
        if (backups.Count == 0) return;

        long swapped = 0;
        foreach (var (i, _) in backups) swapped += _segments[i].Pages;
        Volatile.Write(ref _swappedPages, _swappedPages + swapped);
        // Their pages are still charged (a failed swap-out uncharges nothing): restore them batch by batch.
        int b = 0;
        try
        {
            while (b < backups.Count)
            {
                int end = b + 1;
                long batch = _segments[backups[b].Index].Bytes;
                while (end < backups.Count && backups[end].Index == backups[end - 1].Index + 1) batch += _segments[backups[end++].Index].Bytes;
                RestoreBatch(backups[b].Index, backups[end - 1].Index + 1, batch);
                long restored = batch >> PhysicalMemory.PageShift;
                Volatile.Write(ref _swappedPages, _swappedPages - restored);
                b = end;
            }
        }
        catch (Exception e) when (e is SwapStoreException or OutOfMemoryException or PagePoolException or ObjectDisposedException)
        {
            // The rest stay in the store (or went with it, when it was disposed meanwhile): no longer resident, so
            // no longer charged.
            long left = 0;
            for (; b < backups.Count; b++) left += _segments[backups[b].Index].Pages;
            _accounting.Uncharge(left, Zone);
            State = TtState.SwappedOut;
            if (ResidentPagesOf() == 0) _accounting.Remove(this);
        }
    }

    /// <summary>
    /// Gives the pages of written parts back to the system on thread-pool threads while the caller writes the next
    /// part (a part with no next write is left to the caller: a swap-out of one part stays on its thread, where faults
    /// armed for that thread see it). <see cref="Finish"/> gives back on the calling thread whatever no helper has
    /// started (so progress never waits for the thread pool), then waits for helpers still inside a release. After a
    /// failure nothing more is given back.
    /// </summary>
    private sealed class SystemRelease(PoolAllocator pool, CachingMode caching) : IThreadPoolWorkItem
    {
        private readonly object _gate = new();
        private readonly List<PageHandle[]> _parts = [];
        private readonly List<bool> _released = [];
        private int _claimed, _active;
        private bool _closed;
        private Exception? _failure;

        internal void Add(PageHandle[] blocks, bool helped)
        {
            lock (_gate)
            {
                _parts.Add(blocks);
                _released.Add(false);
            }
            if (helped) ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }

        void IThreadPoolWorkItem.Execute() => ReleaseOne();

        private bool ReleaseOne()
        {
            int k;
            PageHandle[] part;
            lock (_gate)
            {
                if (_closed || _failure is not null || _claimed >= _parts.Count) return false;
                k = _claimed++;
                part = _parts[k]; // under the lock: Add may be growing the list meanwhile
                _active++;
            }
            Exception? failed = null;
            try
            {
                pool.ReleaseToSystem(part, caching); // all or nothing: on failure the part keeps its pages
            }
            catch (Exception e)
            {
                failed = e;
            }
            lock (_gate)
            {
                if (failed is null) _released[k] = true;
                else _failure ??= failed;
                _active--;
                Monitor.PulseAll(_gate);
            }
            return true;
        }

        /// <summary>Which parts went back to the system, and the first failure to give one back.</summary>
        internal bool[] Finish(out Exception? failure)
        {
            while (ReleaseOne()) { }
            lock (_gate)
            {
                _closed = true;
                while (_active > 0) Monitor.Wait(_gate);
                failure = _failure;
                return _released.ToArray();
            }
        }
    }

    private long ResidentPagesOf()
    {
        long n = 0;
        foreach (var seg in _segments) if (seg.Resident) n += seg.Pages;
        return n;
    }

    /// <summary>Called by the accounting with <see cref="Gate"/> held: free this idle buffer's pages. Returns pages freed.</summary>
    internal long EvictLocked()
    {
        if (_disposed || IsExternal || State is not (TtState.Populated or TtState.SwappedOut)) return 0;
        long resident = ResidentPagesOf();
        bool purge = (Flags & TtFlags.Purgeable) != 0;
        long freed = purge ? resident : Backup(long.MaxValue);
        if (purge) DropEverything(toSystem: true);
        if (PagePoolEventSource.Log.SwapOn) PagePoolEventSource.Log.BufferEvicted(resident, purge ? 1 : 0, _accounting.Pages);
        return freed;
    }

    // ---- bind ----------------------------------------------------------------------------------------------

    // A bind needs a live, populated, unbound buffer (under Gate).
    private void CheckBindable()
    {
        Live();
        if (State != TtState.Populated)
            throw new TtStateException("bind", State, State == TtState.Bound ? $"unbind it from {BoundName} first."
                : State == TtState.SwappedOut ? "populate it first to bring its pages back." : "populate it first.");
    }

    /// <summary>
    /// Bind to a device: it gets a DMA address for every page. Pages it cannot reach (a 64-bit page for a 32-bit
    /// device) are first copied into DMA32 pages; a device that reaches them all takes them as they are. Returns true
    /// when the pages were copied.
    /// </summary>
    public bool Bind(ITtBindTarget target)
    {
        ArgumentNullException.ThrowIfNull(target);
        lock (Gate)
        {
            CheckBindable();
            bool copied = false;
            if (!Reaches(target.AddressLimit))
            {
                if (Zone == Zone.Dma32 || IsExternal)
                    throw new PagePoolException($"Cannot bind a buffer of {PageCount} pages to {target.Name}: its pages lie above the device's limit 0x{target.AddressLimit:x} and cannot be moved lower.");
                MoveToDma32();
                copied = true;
                if (!Reaches(target.AddressLimit))
                    throw new PagePoolException($"Cannot bind to {target.Name}: even DMA32 pages lie above its limit 0x{target.AddressLimit:x}; the buffer stays populated in DMA32.");
            }
            var physical = new ulong[PageCount];
            int p = 0;
            foreach (var seg in _segments)
                foreach (var h in seg.Blocks!)
                {
                    ulong a = _memory.PhysicalAddress(h);
                    for (int k = 0; k < h.PageCount; k++) physical[p++] = a + ((ulong)k << PhysicalMemory.PageShift);
                }
            var dma = new ulong[PageCount];
            target.Bind(physical, dma);
            _dma = dma;
            _target = target;
            State = TtState.Bound;
            _accounting.Remove(this); // in use by a device: not a swap victim
            return copied;
        }
    }

    /// <summary>Unbind from the device: the DMA addresses are gone and the buffer is idle again.</summary>
    public void Unbind()
    {
        lock (Gate)
        {
            Live();
            if (State != TtState.Bound) throw new TtStateException("unbind", State, "it is not bound to a device.");
            ReleaseBinding();
            if (!IsExternal) _accounting.Touch(this);
        }
    }

    /// <summary>
    /// Bind to a device of the DMA layer: every page is mapped through the device's ops (dma-direct, IOMMU, swiotlb or
    /// Xen) as one streaming mapping, and the DMA address of each page is recorded. A dma-direct device that cannot
    /// address the pages (a 64-bit page for a 32-bit device) gets copies in DMA32 pages first, as TTM copies a buffer
    /// into pages the new device can reach; an IOMMU reaches any page through its IOVA space; swiotlb and Xen ops
    /// bounce what the device cannot reach (sync with <see cref="SyncForDevice"/> and <see cref="SyncForCpu"/>).
    /// Returns true when the pages were copied. On failure nothing is mapped and the buffer stays populated (in DMA32
    /// pages if the copy was made).
    /// </summary>
    /// <exception cref="ArgumentException">The device belongs to another memory space than the buffer.</exception>
    /// <exception cref="DmaMappingException">The device cannot map the pages (a dma-direct device below even DMA32).</exception>
    /// <exception cref="SwiotlbFullException">Bouncing ops found no room in the bounce pool.</exception>
    public bool Bind(DmaDevice device, DmaDirection direction = DmaDirection.Bidirectional)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!Enum.IsDefined(direction)) throw new ArgumentOutOfRangeException(nameof(direction), direction, "Unknown DMA direction.");
        if (device.Platform.Memory != _memory)
            throw new ArgumentException($"Device '{device.Name}' belongs to another memory space than this buffer's pages.", nameof(device));
        lock (Gate)
        {
            CheckBindable();
            bool copied = false;
            if (device.OpsKind == DmaOpsKind.Direct && !Reaches(device.Mask, byMachineAddress: true))
            {
                if (Zone == Zone.Dma32 || IsExternal)
                    throw new DmaMappingException(device.Name, 0, $"Cannot bind a buffer of {PageCount} pages to '{device.Name}': its pages lie above the device's mask 0x{device.Mask:x} and cannot be moved lower.");
                MoveToDma32();
                copied = true;
            }
            // Bouncing ops take at most a swiotlb segment per mapping: map those page by page. The others map whole blocks.
            bool pageByPage = device.OpsKind is DmaOpsKind.Swiotlb or DmaOpsKind.Xen;
            var list = new DmaScatterlist();
            foreach (var seg in _segments)
                foreach (var h in seg.Blocks!)
                {
                    if (!pageByPage) list.Add(h, 0, h.PageCount << PhysicalMemory.PageShift);
                    else for (int k = 0; k < h.PageCount; k++) list.Add(h, k << PhysicalMemory.PageShift, PhysicalMemory.PageSize);
                }
            device.MapScatterlist(list, direction); // all or nothing
            var dma = new ulong[PageCount];
            int p = 0;
            foreach (ulong address in list.DmaPages()) dma[p++] = address;
            System.Diagnostics.Debug.Assert(p == PageCount, "a mapped scatterlist covers every page once");
            _dma = dma;
            _device = device;
            _mapped = list;
            _mappedDirection = direction;
            State = TtState.Bound;
            _accounting.Remove(this); // in use by a device: not a swap victim
            return copied;
        }
    }

    /// <summary>Hand the pages to the bound device after the CPU wrote them (dma_sync_sg_for_device): bouncing ops copy them to the bounce slots.</summary>
    public void SyncForDevice() => SyncMapped(forCpu: false);

    /// <summary>Take the pages back for the CPU after the device wrote them (dma_sync_sg_for_cpu): bouncing ops copy them back.</summary>
    public void SyncForCpu() => SyncMapped(forCpu: true);

    private void SyncMapped(bool forCpu)
    {
        lock (Gate)
        {
            Live();
            if (State != TtState.Bound || _mapped is null)
                throw new TtStateException(forCpu ? "sync for the CPU" : "sync for the device", State, "bind it to a DMA device first.");
            if (forCpu) _device!.SyncScatterlistForCpu(_mapped, _mappedDirection);
            else _device!.SyncScatterlistForDevice(_mapped, _mappedDirection);
        }
    }

    // Undo the binding, whichever kind it is: the buffer is idle and anonymous again.
    private void ReleaseBinding()
    {
        if (_device is not null)
        {
            try
            {
                _device.UnmapScatterlist(_mapped!, _mapped!.Count, _mappedDirection);
            }
            catch (ObjectDisposedException)
            {
                // The device was released first; its mappings went with it (its checker reported them pending).
            }
        }
        else _target!.Unbind(_dma);
        _device = null;
        _mapped = null;
        _target = null;
        _dma = null;
        State = TtState.Populated;
    }

    /// <summary>The DMA address the bound device uses for page <paramref name="page"/>.</summary>
    public ulong DmaAddress(int page)
    {
        lock (Gate)
        {
            Live();
            if (State != TtState.Bound) throw new TtStateException("read the DMA address of", State, "bind it to a device first.");
            if ((uint)page >= (uint)PageCount) throw new ArgumentOutOfRangeException(nameof(page), page, $"The buffer has {PageCount} pages.");
            return _dma![page];
        }
    }

    // Whether every page lies below `limit`: by physical address (a bind target's view), or by machine address
    // (dma-direct's view: under Xen a page's machine frame is anywhere, so each page is looked at).
    private bool Reaches(ulong limit, bool byMachineAddress = false)
    {
        foreach (var seg in _segments)
            foreach (var h in seg.Blocks!)
            {
                if (!byMachineAddress)
                {
                    if (_memory.PhysicalAddress(h) + ((ulong)h.PageCount << PhysicalMemory.PageShift) - 1 > limit) return false;
                    continue;
                }
                ulong frame = _memory.FrameOf(h);
                for (int k = 0; k < h.PageCount; k++)
                    if ((_memory.MachineFrameOf(frame + (ulong)k) << PhysicalMemory.PageShift) + PhysicalMemory.PageSize - 1 > limit) return false;
            }
        return true;
    }

    // seeds/000: a 64-bit page moving to a 32-bit device is copied into pages the device can address.
    private void MoveToDma32()
    {
        _accounting.Charge(this, PageCount, Zone.Dma32);
        var blocks = new PageHandle[PageCount];
        int n;
        try
        {
            n = _accounting.Pool.Allocate(PageCount, Caching, Zone.Dma32, blocks, AllocationFlags.NoClear);
        }
        catch
        {
            _accounting.Uncharge(PageCount, Zone.Dma32);
            throw;
        }
        // Copy page by page, source and destination blocks walked side by side.
        int si = 0, sk = 0;
        var source = new List<PageHandle>();
        foreach (var seg in _segments) source.AddRange(seg.Blocks!);
        for (int d = 0; d < n; d++)
            for (int k = 0; k < blocks[d].PageCount; k++)
            {
                byte* dst = _memory.ViewOf(blocks[d]) + ((nuint)k << PhysicalMemory.PageShift);
                byte* src = _memory.ViewOf(source[si]) + ((nuint)sk << PhysicalMemory.PageShift);
                PhysicalMemory.StoreAs(Caching, dst, src, PhysicalMemory.PageSize);
                if (++sk == source[si].PageCount) { si++; sk = 0; }
            }
        _segments = SegmentsOf(blocks.AsSpan(0, n));
        MapAllResident(); // the CPU mapping moves to the copies before the old pages go back
        _accounting.Pool.Release(source.ToArray(), Caching);
        _accounting.Uncharge(PageCount, Zone);
        Zone = Zone.Dma32;
    }

    // ---- the stable CPU mapping and device-local memory ------------------------------------------------------

    /// <summary>
    /// The buffer's CPU address, the same for its whole life: it maps the pages while they are in system memory,
    /// maps the VRAM range while the buffer is device-local, and while pages are absent (swapped out, unpopulated)
    /// either faults them back in when touched (<see cref="AccountingOptions.FaultInOnAccess"/>, where
    /// <see cref="FaultHandlingAvailable"/>; read its caveat) or leaves them inaccessible: populate before use.
    /// </summary>
    public nint CpuAddress
    {
        get
        {
            lock (Gate)
            {
                Live();
                if (_cpu is null)
                {
                    var cpu = new CpuMapping(Bytes, _accounting.Options.FaultInOnAccess);
                    _cpu = cpu;
                    if (State == TtState.DeviceLocal) cpu.MapVram(_vram!, _vramPage);
                    else
                    {
                        cpu.MapAbsent(0, PageCount);
                        MapAllResident();
                    }
                    SwapFaultHandler.Add(this);
                }
                return (nint)_cpu.Base;
            }
        }
    }

    /// <summary>True when touching an absent page faults it in (userfaultfd works here); else why not.</summary>
    public static bool FaultHandlingAvailable => SwapFaultHandler.Available;

    /// <summary>Why userfaultfd is unavailable, or null when it works.</summary>
    public static string? FaultHandlingRefusedReason => SwapFaultHandler.RefusedReason;

    internal bool MappingContains(ulong address) => _cpu is { } c && c.Contains(address);

    internal (nint Start, nuint Length) MappingRange => ((nint)_cpu!.Base, _cpu.Length);

    /// <summary>The fault handler's populate: true when the pages are there (or the array is gone), false to retry.</summary>
    internal bool FaultIn()
    {
        lock (Gate)
        {
            if (_disposed || State is not (TtState.Unpopulated or TtState.SwappedOut)) return true;
            try
            {
                Populate();
                return true;
            }
            catch (PagePoolException)
            {
                return false;
            }
        }
    }

    /// <summary>
    /// Move the contents into device-local memory: a VRAM range is taken, the pages copied there and given back. The
    /// CPU mapping follows. Only from Populated (unbind first: the device state and VRAM are different placements).
    /// </summary>
    /// <exception cref="PagePoolException">The region has no free range of the buffer's size; nothing changed.</exception>
    public void MoveToVram(VramRegion vram)
    {
        ArgumentNullException.ThrowIfNull(vram);
        lock (Gate)
        {
            Live();
            if (State != TtState.Populated || IsExternal)
                throw new TtStateException("move to VRAM", State, IsExternal ? "its pages are external." : "populate it (and unbind it) first.");
            long page = vram.Allocate(PageCount);
            if (page < 0)
                throw new PagePoolException($"VRAM has no free range of {PageCount} pages ({vram.FreeBytes} bytes free in all); move other buffers out first.");
            byte* dst = vram.At(page);
            foreach (var seg in _segments)
                foreach (var h in seg.Blocks!)
                {
                    nuint len = (nuint)h.PageCount << PhysicalMemory.PageShift;
                    Buffer.MemoryCopy(_memory.ViewOf(h), dst, len, len);
                    dst += len;
                }
            _cpu?.MapVram(vram, page); // the mapping moves before the pages go back to the pool
            long resident = 0;
            foreach (var seg in _segments)
            {
                _accounting.Pool.Release(seg.Blocks, Caching);
                resident += seg.Pages;
                seg.Blocks = null;
            }
            _accounting.Uncharge(resident, Zone);
            _accounting.Remove(this);
            _segments = [];
            _vram = vram;
            _vramPage = page;
            State = TtState.DeviceLocal;
        }
    }

    /// <summary>Move the contents from VRAM back into system pages (charged, so LRU buffers may be swapped out first).</summary>
    public void MoveToSystem()
    {
        lock (Gate)
        {
            Live();
            if (State != TtState.DeviceLocal) throw new TtStateException("move to system memory", State, "it is not in device-local memory.");
            var saved = _cpu;
            _cpu = null; // map once, after the copy, not page by page as Allocate would
            try
            {
                Allocate();
            }
            finally
            {
                _cpu = saved;
            }
            byte* src = _vram!.At(_vramPage);
            foreach (var seg in _segments)
                foreach (var h in seg.Blocks!)
                {
                    nuint len = (nuint)h.PageCount << PhysicalMemory.PageShift;
                    PhysicalMemory.StoreAs(Caching, _memory.ViewOf(h), src, len);
                    src += len;
                }
            MapAllResident();
            _vram.Free(_vramPage, PageCount);
            _vram = null;
            _vramPage = -1;
            _accounting.Touch(this);
        }
    }

    // ---- contents ------------------------------------------------------------------------------------------

    /// <summary>Write bytes at a byte offset of a resident buffer, as its caching mode stores them.</summary>
    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        lock (Gate)
        {
            Resident("write", offset, source.Length);
            fixed (byte* s = source)
                Walk(offset, source.Length, s, write: true);
            Used();
        }
    }

    /// <summary>Read bytes at a byte offset of a resident buffer.</summary>
    public void Read(long offset, Span<byte> destination)
    {
        lock (Gate)
        {
            Resident("read", offset, destination.Length);
            fixed (byte* d = destination)
                Walk(offset, destination.Length, d, write: false);
            Used();
        }
    }

    // Copy [offset, offset + length) of the buffer from or to the caller's bytes, block by block.
    private void Walk(long offset, int length, byte* user, bool write)
    {
        long done = 0;
        foreach (var seg in _segments)
        {
            long segStart = (long)seg.FirstPage << PhysicalMemory.PageShift;
            if (segStart + seg.Bytes <= offset) continue;
            long blockStart = segStart;
            foreach (var h in seg.Blocks!)
            {
                long blockBytes = (long)h.PageCount << PhysicalMemory.PageShift;
                long from = offset + done;
                if (from < blockStart + blockBytes && done < length)
                {
                    int len = (int)Math.Min(length - done, blockStart + blockBytes - from);
                    byte* at = _memory.ViewOf(h) + (from - blockStart);
                    if (write) PhysicalMemory.StoreAs(Caching, at, user + done, (nuint)len);
                    else Buffer.MemoryCopy(at, user + done, len, len);
                    done += len;
                }
                blockStart += blockBytes;
            }
            if (done == length) return;
        }
    }

    // One segment per block, in page order: the layout of a freshly populated (or freshly copied) array.
    private static TtSegment[] SegmentsOf(ReadOnlySpan<PageHandle> blocks)
    {
        var segments = new TtSegment[blocks.Length];
        int page = 0;
        for (int i = 0; i < blocks.Length; i++)
        {
            segments[i] = new TtSegment(page, blocks[i].PageCount) { Blocks = [blocks[i]] };
            page += blocks[i].PageCount;
        }
        return segments;
    }

    private void Resident(string operation, long offset, int length)
    {
        Live();
        if (State is not (TtState.Populated or TtState.Bound))
            throw new TtStateException(operation, State, "populate it first.");
        if (offset < 0 || offset > Bytes - length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"The range [{offset}, {offset}+{length}) is outside the buffer of {Bytes} bytes.");
    }

    private void Used()
    {
        if (State == TtState.Populated && !IsExternal) _accounting.Touch(this);
    }

    /// <summary>
    /// Reserve the array (TTM's ttm_bo_reserve): until the reservation is disposed, other reservations of the array wait
    /// and reclaim skips it, so a populate followed by reads and writes sees the pages stay. Code that shares an array
    /// between threads reserves it before using it, as TTM code reserves a buffer object; each call on the array also
    /// takes the array's internal lock for its own duration. The reservation is a token, not a thread's lock: any
    /// thread may use it and dispose it (a task that moves between threads, a worker that hands the buffer on), and one
    /// left behind by a thread that ended is released by whoever holds the token. Not re-entrant: reserving an array
    /// the caller already reserved waits for itself.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancel"/> fired while another reservation held the array.</exception>
    public PageArrayReservation Reserve(CancellationToken cancel = default)
    {
        _reservation.Wait(cancel);
        return Reserved();
    }

    /// <summary>Reserve the array if no one else holds it within <paramref name="timeout"/>; see <see cref="Reserve"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite) or longer than int.MaxValue milliseconds.</exception>
    public bool TryReserve(TimeSpan timeout, out PageArrayReservation reservation)
    {
        reservation = default;
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan || timeout.TotalMilliseconds > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "Wait zero or more milliseconds up to int.MaxValue, or Timeout.InfiniteTimeSpan.");
        if (!_reservation.Wait(timeout)) return false;
        reservation = Reserved();
        return true;
    }

    private PageArrayReservation Reserved()
    {
        var ticket = new object();
        Volatile.Write(ref _reservedBy, ticket);
        // Reclaim that chose this array before the reservation was visible finishes before the holder's first call.
        lock (Gate) { }
        return new PageArrayReservation(this, ticket);
    }

    /// <summary>True while a reservation holds the array.</summary>
    public bool IsReserved => Volatile.Read(ref _reservedBy) is not null;

    /// <summary>Release the reservation <paramref name="ticket"/> stands for; a second release of the same ticket does nothing.</summary>
    internal void Unreserve(object ticket)
    {
        if (Interlocked.CompareExchange(ref _reservedBy, null, ticket) == ticket) _reservation.Release();
    }

    /// <summary>Mark the buffer as just used: the last the accounting will swap out.</summary>
    public void Touch()
    {
        lock (Gate)
        {
            Live();
            Used();
        }
    }

    private void Live() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Unbind, give back every page and every swap extent. Legal in every state; a second call does nothing.</summary>
    public void Dispose()
    {
        lock (Gate)
        {
            if (_disposed) return;
            if (State == TtState.Bound)
            {
                ReleaseBinding();
            }
            if (State == TtState.DeviceLocal)
            {
                _vram!.Free(_vramPage, PageCount);
                _vram = null;
                _vramPage = -1;
                State = TtState.Unpopulated;
            }
            if (State != TtState.Unpopulated)
            {
                if (IsExternal) { _segments = []; State = TtState.Unpopulated; }
                else DropEverything(toSystem: false);
            }
            _accounting.Remove(this);
            _disposed = true;
            if (_cpu is not null)
            {
                SwapFaultHandler.Remove(this);
                _cpu.Dispose();
            }
        }
    }
}
