using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PagePool.Diagnostics;
using PagePool.Native;

namespace PagePool.Memory;

/// <summary>
/// The emulated physical address space: real memory (memfd arenas) with frame numbers, a DMA32 zone below
/// 4 GiB and a normal zone above it, an optional Xen P2M, and the stand-in for the kernel's page allocator
/// (a buddy allocator per arena under a lock per zone). Every page has a frame number, a physical address,
/// a view pointer callers use and a cached linear alias that caching changes protect.
/// </summary>
/// <remarks>
/// Frame layout: DMA32 arenas take frames from 16 MiB (above ZONE_DMA) up, normal arenas from 4 GiB up; arena
/// slot i of a zone always covers the same frames, so a frame number is arena base + page index, O(1) both ways.
/// <para>Every block's metadata word (see <see cref="PageMeta"/>) says who holds it: this class owns the Free
/// state, the pools above own Pooled, callers own Allocated, and a thread changing a block's caching or giving it
/// back holds it Busy. Words change by compare-and-swap where threads race and by a plain store by the one thread
/// that holds the block; PageMeta says exactly when each is used.</para>
/// <para>Identity: each space takes a serial that is never reused in the process, and every handle carries it, so
/// a handle of a disposed space is foreign to every space created later.</para>
/// <para>Dispose: afterwards every member throws <see cref="ObjectDisposedException"/>. Dispose waits for calls
/// that allocate, free or change caching (the ones that touch the memfds and the page tables) to finish, then
/// retires the arenas: their memory goes back to the system and their file descriptors are closed. A call
/// already past its check on a hot path (a pool hit, a release, a read or write through a span) when Dispose runs
/// does not fault: metadata and address ranges stay valid until the space is garbage collected, and what such a
/// call writes is lost. A handle of a disposed space is refused by every space, this one included. A span taken
/// before Dispose is native memory freed under it and must not be used: until the space is collected it reads
/// zeros and its writes are lost, after that its addresses may be mapped again for anything.</para>
/// </remarks>
public sealed unsafe class PhysicalMemory : IDisposable
{
    /// <summary>Bytes in a page.</summary>
    public const int PageSize = 4096;
    /// <summary>log2 of <see cref="PageSize"/>.</summary>
    public const int PageShift = 12;
    /// <summary>The largest block order (2^9 pages = 2 MiB), as TTM's pools use.</summary>
    public const int MaxOrder = Arena.MaxOrder;

    private const ulong Dma32BaseFrame = (16UL << 20) >> PageShift;   // above ZONE_DMA's 16 MiB
    private const ulong NormalBaseFrame = (4UL << 30) >> PageShift;   // 4 GiB
    private const int MaxArenas = 1 << PageHandle.ArenaBits;
    private const int SpareEmptyArenas = 1;                            // hysteresis against map/unmap churn

    private static long s_lastSerial;

    private readonly Arena?[] _arenas;
    private readonly ZoneState[] _zones;
    private readonly XenP2M? _p2m;
    private readonly int _arenaPages;
    private int _disposed;

    /// <summary>Whether <see cref="Dispose"/> has begun: every view of the space is retired (reads zero) from then on.</summary>
    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;
    private int _callsInside; // calls that touch memfds or page tables, running now; Dispose waits for them

    /// <summary>This space's identity, unique for the life of the process (never 0); every handle carries it.</summary>
    internal readonly ulong Serial;
    private readonly ulong _spaceTag; // the serial's 8-bit tag in every handle's Value

    /// <summary>The options this space was built with.</summary>
    public MemoryOptions Options { get; }

    private sealed class ZoneState(Zone zone, int firstSlot, int slots, ulong baseFrame, long capacity)
    {
        internal readonly Zone Zone = zone;
        internal readonly int FirstSlot = firstSlot, Slots = slots;
        internal readonly ulong BaseFrame = baseFrame;
        internal readonly long Capacity = capacity;
        internal readonly Lock Lock = new();
        internal readonly List<Arena> Mapped = new();
    }

    /// <summary>Lay out an address space. Nothing is mapped until the first block is allocated.</summary>
    public PhysicalMemory(MemoryOptions? options = null)
    {
        PagePoolEventSource.EnsureCreated();
        Options = options ?? new MemoryOptions();
        Options.Validate();
        _arenaPages = (int)(Options.ArenaBytes >> PageShift);
        int dmaSlots = (int)(Options.Dma32Bytes / Options.ArenaBytes);
        int normalSlots = (int)(Options.NormalBytes / Options.ArenaBytes); // Validate checked it fits beside DMA32
        _zones =
        [
            new ZoneState(Zone.Dma32, 0, dmaSlots, Dma32BaseFrame, (long)dmaSlots * Options.ArenaBytes),
            new ZoneState(Zone.Normal, dmaSlots, normalSlots, NormalBaseFrame, (long)normalSlots * Options.ArenaBytes),
        ];
        _arenas = new Arena?[dmaSlots + normalSlots];
        if (Options.Xen)
            _p2m = new XenP2M(NormalBaseFrame + (ulong)normalSlots * (ulong)_arenaPages, Options.XenSeed);

        // 64 bits never wrap in a process's life: a space a nanosecond for 500 years.
        Serial = (ulong)Interlocked.Increment(ref s_lastSerial);
        _spaceTag = PageHandle.SpaceTagOf(Serial);
    }

    /// <summary>True when this space emulates a Xen guest (pseudo-physical frames, scattered machine frames).</summary>
    public bool IsXen => _p2m is not null;

    /// <summary>Under Xen, the regions exchanged for machine-contiguous frames and not destroyed yet (tests: nothing stays exchanged).</summary>
    internal int XenExchangedRegions => _p2m?.ExchangedCount ?? 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowDisposed();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    [DoesNotReturn]
    private void ThrowDisposed() => throw new ObjectDisposedException(nameof(PhysicalMemory),
        "This memory space was disposed: its pages went back to the system and its handles name nothing any more.");

    // Enter a call that touches the memfds, the page tables or the buddy allocators; Dispose waits until every
    // such call has left. The increment and Dispose's exchange are both full fences, so either Dispose sees this
    // call and waits, or this call sees Dispose and backs out.
    private void EnterCall()
    {
        Interlocked.Increment(ref _callsInside);
        if (Volatile.Read(ref _disposed) != 0)
        {
            Interlocked.Decrement(ref _callsInside);
            ThrowDisposed();
        }
    }

    private void ExitCall() => Interlocked.Decrement(ref _callsInside);

    // The zone's state, for a zone value the caller passed: anything but Dma32 and Normal is an argument error.
    private ZoneState ZoneStateOf(Zone zone)
    {
        ThrowIfDisposed();
        if ((uint)zone >= (uint)_zones.Length)
            throw new ArgumentOutOfRangeException(nameof(zone), zone, "The zone must be Zone.Dma32 or Zone.Normal.");
        return _zones[(int)zone];
    }

    private static void CheckCaching(CachingMode mode)
    {
        if ((uint)mode > (uint)CachingMode.Uncached)
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "The caching mode must be WriteBack, WriteCombined or Uncached.");
    }

    /// <summary>Bytes currently mapped in arenas of a zone (mapped, not necessarily resident).</summary>
    public long MappedBytes(Zone zone)
    {
        var z = ZoneStateOf(zone);
        lock (z.Lock) return (long)z.Mapped.Count * Options.ArenaBytes;
    }

    /// <summary>Bytes handed out of a zone by the block allocator (to pools or callers).</summary>
    public long UsedBytes(Zone zone)
    {
        var z = ZoneStateOf(zone);
        lock (z.Lock)
        {
            long used = 0;
            foreach (var a in z.Mapped) used += (long)(a.Pages - a.FreePages) << PageShift;
            return used;
        }
    }

    /// <summary>The capacity of a zone in bytes.</summary>
    public long Capacity(Zone zone) => ZoneStateOf(zone).Capacity;

    // ---- the page allocator (slow path) --------------------------------------------------------------

    /// <summary>Allocate a block of 2^order pages from a zone, write-back, zeroed; throws when the zone is exhausted.</summary>
    public PageHandle AllocateBlock(Zone zone, int order)
        => TryAllocateBlock(zone, order, 0, out var h) ? h : throw new ZoneExhaustedException(zone, order, _zones[(int)zone].Capacity);

    /// <summary>
    /// Allocate a block of 2^order pages held by <paramref name="owner"/> (a pool id, 0 for a direct caller).
    /// Fresh blocks read zero (their memfd range was never written or was punched out). False when the zone is full.
    /// </summary>
    internal bool TryAllocateBlock(Zone zone, int order, int owner, out PageHandle handle)
    {
        Debug.Assert((uint)owner <= 0xFFFF, "owner ids fit the metadata word's 16 bits");
        var z = ZoneStateOf(zone);
        if ((uint)order > MaxOrder)
            throw new ArgumentOutOfRangeException(nameof(order), order, $"The order must be 0..{MaxOrder} (1 to {1 << MaxOrder} pages).");
        if (zone == Zone.Dma32 && Faults.FaultInjector.ShouldFail(Faults.FaultPoint.Dma32Zone))
        {
            handle = default;
            return false; // as if the zone were full: callers take their exhaustion path
        }
        EnterCall();
        try
        {
            Arena? arena = null;
            int page = -1;
            lock (z.Lock)
            {
                foreach (var a in z.Mapped)
                    if (a.HasFree(order)) { arena = a; page = a.TryAllocate(order); break; }
                if (arena is null && (arena = MapArena(z)) is not null)
                    page = arena.TryAllocate(order);
            }
            if (arena is null) { handle = default; return false; }
            handle = Handed(arena, page, order, owner);
            return true;
        }
        finally
        {
            ExitCall();
        }
    }

    // A block the buddy allocator just handed out becomes allocated: a plain store, it is ours alone.
    private PageHandle Handed(Arena arena, int page, int order, int owner)
    {
        ulong* m = arena.MetaOf(page);
        ulong gen = PageMeta.Generation(Volatile.Read(ref *m));
        Debug.Assert(PageMeta.State(Volatile.Read(ref *m)) == PageState.Free, "the buddy allocator hands out only free blocks");
        Volatile.Write(ref *m, PageMeta.Make(PageState.Allocated, CachingMode.WriteBack, order, owner, gen));
        return new PageHandle(Serial, arena.Index, page, order, gen);
    }

    /// <summary>
    /// Allocate <paramref name="blocks"/> blocks of <see cref="MaxOrder"/> that lie one after another, physically and
    /// in the view (one range, as the kernel sets aside for swiotlb at boot): from the first arena of the zone that
    /// has such a run free, or a fresh one. Each is freed on its own with <see cref="FreeBlock"/>. False when the
    /// zone has no such run and no room for a fresh arena, or the run is longer than an arena.
    /// </summary>
    internal bool TryAllocateRange(Zone zone, int blocks, out PageHandle[] handles)
    {
        handles = [];
        var z = ZoneStateOf(zone);
        if (blocks <= 0 || (long)blocks << MaxOrder > _arenaPages) return false;
        if (zone == Zone.Dma32 && Faults.FaultInjector.ShouldFail(Faults.FaultPoint.Dma32Zone)) return false;
        EnterCall();
        try
        {
            lock (z.Lock)
            {
                Arena? arena = null;
                int page = -1;
                foreach (var a in z.Mapped)
                    if ((page = a.FindFreeRun(blocks)) >= 0) { arena = a; break; }
                if (arena is null && (arena = MapArena(z)) is not null)
                    page = arena.FindFreeRun(blocks);
                if (arena is null || page < 0) return false;
                handles = new PageHandle[blocks];
                for (int b = 0; b < blocks; b++)
                {
                    int at = page + (b << MaxOrder);
                    arena.TakeFree(at);
                    handles[b] = Handed(arena, at, MaxOrder, 0);
                }
                return true;
            }
        }
        finally
        {
            ExitCall();
        }
    }

    // Map an unused slot of the zone; null when the zone is at capacity. Called under the zone lock.
    private Arena? MapArena(ZoneState z)
    {
        Debug.Assert(z.Lock.IsHeldByCurrentThread);
        for (int s = 0; s < z.Slots; s++)
        {
            int index = z.FirstSlot + s;
            var a = _arenas[index] ??= new Arena(index, z.Zone, _arenaPages, z.BaseFrame + (ulong)s * (ulong)_arenaPages);
            if (a.IsMapped) continue;
            a.Map();
            if (PagePoolEventSource.MemoryOn) PagePoolEventSource.Log.ArenaMapped((int)z.Zone, index, (long)a.Bytes);
            int at = z.Mapped.FindIndex(m => m.Index > index);
            z.Mapped.Insert(at < 0 ? z.Mapped.Count : at, a); // keep address order: first fit packs low arenas
            return a;
        }
        return null;
    }

    /// <summary>Give a block back to the system (see <see cref="FreeBlocks(ReadOnlySpan{PageHandle}, int)"/>).</summary>
    public void FreeBlock(PageHandle block) => FreeBlocks([block], 0);

    /// <summary>Give back blocks a pool keeps as raw values (see <see cref="FreeBlocks(ReadOnlySpan{PageHandle}, int)"/>).</summary>
    internal void FreeBlocks(ReadOnlySpan<ulong> raw, int owner)
    {
        Span<PageHandle> blocks = raw.Length <= 512 ? stackalloc PageHandle[raw.Length] : new PageHandle[raw.Length];
        for (int i = 0; i < raw.Length; i++) blocks[i] = HandleOf(raw[i]);
        FreeBlocks(blocks, owner);
    }

    /// <summary>
    /// Give blocks back to the system: caching back to write-back (batched), memory punched out of the memfd
    /// (RSS drops), blocks merged in the buddy allocator, and wholly free arenas unmapped beyond a spare one.
    /// Every handle is checked first and every block taken Busy before anything changes; on any error nothing has
    /// changed (unless the kernel refuses a page-table change half way, which leaves the blocks held, with the
    /// caching they reached).
    /// </summary>
    internal void FreeBlocks(ReadOnlySpan<PageHandle> blocks, int owner)
    {
        EnterCall();
        try
        {
            foreach (var h in blocks)
            {
                ulong w = ResolveLive(h, out _);
                if (PageMeta.Owner(w) != owner)
                    throw new PageHandleException(h, HandleError.Foreign, owner == 0
                        ? "The block belongs to a page pool; give it back to that pool."
                        : "The block does not belong to this page pool.");
                if (PageMeta.State(w) == PageState.Busy)
                    throw Busy(h);
            }
            Span<ulong> before = blocks.Length <= 512 ? stackalloc ulong[blocks.Length] : new ulong[blocks.Length];
            TakeBusy(blocks, before, allowPooled: true);
            try
            {
                CachingTransition.Apply(this, blocks, CachingMode.WriteBack);
            }
            catch
            {
                for (int i = 0; i < blocks.Length; i++)
                {
                    ulong* m = MetaOf(blocks[i]);
                    Volatile.Write(ref *m, PageMeta.WithState(Volatile.Read(ref *m), PageMeta.State(before[i])));
                }
                throw;
            }

            // Commit: each block to Free with a new generation, by plain store: this thread holds them all Busy.
            foreach (var h in blocks)
            {
                ulong* m = MetaOf(h);
                Volatile.Write(ref *m, PageMeta.NextGeneration(PageMeta.WithState(Volatile.Read(ref *m), PageState.Free)));
            }

            // Punch contiguous runs with one fallocate each, then hand the blocks to the buddy allocator.
            for (int i = 0; i < blocks.Length;)
            {
                var first = blocks[i];
                var arena = ArenaOf(first);
                int end = first.Page + first.PageCount, j = i + 1;
                while (j < blocks.Length && blocks[j].Arena == first.Arena && blocks[j].Page == end) end += blocks[j++].PageCount;
                ReturnToKernel(arena, first.Page, end - first.Page);
                i = j;
            }
            foreach (var z in _zones)
            {
                bool touched = false;
                foreach (var h in blocks) if (ArenaOf(h).Zone == z.Zone) { touched = true; break; }
                if (!touched) continue;
                lock (z.Lock)
                {
                    foreach (var h in blocks)
                    {
                        var a = ArenaOf(h);
                        if (a.Zone == z.Zone) a.Free(h.Page, h.Order);
                    }
                    UnmapEmptyArenas(z);
                }
            }
        }
        finally
        {
            ExitCall();
        }
    }

    /// <summary>
    /// Punch freed pages out of the memory file so the kernel takes them back. The free itself cannot fail here: if
    /// the kernel refuses the punch (fallocate failing), the pages are cleared instead, so they still read zero when
    /// handed out again, and <see cref="PunchFailures"/> counts it; the memory stays resident until the arena goes.
    /// </summary>
    private void ReturnToKernel(Arena arena, int page, int count)
    {
        try
        {
            arena.Discard(page, count);
            if (PagePoolEventSource.MemoryOn) PagePoolEventSource.Log.MemoryReturned((int)arena.Zone, count);
        }
        catch (NativeCallException)
        {
            Interlocked.Increment(ref _punchFailures);
            NativeMemory.Clear(arena.View + ((nuint)page << PageShift), (nuint)count << PageShift);
        }
    }

    private long _punchFailures;

    /// <summary>
    /// Runs of freed pages the kernel refused to take back (fallocate failed): they were cleared and stay resident.
    /// Zero on a healthy system.
    /// </summary>
    public long PunchFailures => Volatile.Read(ref _punchFailures);

    /// <summary>
    /// Take every block for this thread alone (state Busy), by compare-and-swap from the word the checks saw; on a
    /// lost race or a block named twice, put back the ones taken and throw. <paramref name="before"/> receives the
    /// words as they were. The checks before this one said which words are acceptable; this re-checks what a racing
    /// thread may have changed since: the state, the generation and the order.
    /// </summary>
    private void TakeBusy(ReadOnlySpan<PageHandle> blocks, Span<ulong> before, bool allowPooled)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            var h = blocks[i];
            ulong* m = MetaOf(h);
            ulong w = Volatile.Read(ref *m);
            var state = PageMeta.State(w);
            bool takeable = (state == PageState.Allocated || (allowPooled && state == PageState.Pooled))
                            && (PageMeta.Generation(w) & PageHandle.GenerationMask) == h.Generation && PageMeta.Order(w) == h.Order;
            if (takeable && Interlocked.CompareExchange(ref *m, PageMeta.WithState(w, PageState.Busy), w) == w)
            {
                before[i] = w;
                continue;
            }
            for (int k = 0; k < i; k++) Volatile.Write(ref *MetaOf(blocks[k]), before[k]);
            if (blocks[..i].Contains(h))
                throw new PageHandleException(h, HandleError.DoubleFree, "The handle appears twice in one call; nothing was changed.");
            throw LostRace(h, Volatile.Read(ref *m));
        }
    }

    // Say why a block could not be taken, from the word as it is now (the one the failed CAS saw has gone).
    private static PageHandleException LostRace(PageHandle h, ulong now)
    {
        if (PageMeta.State(now) == PageState.Busy) return Busy(h);
        if ((PageMeta.Generation(now) & PageHandle.GenerationMask) != h.Generation || PageMeta.State(now) == PageState.Free)
            return new PageHandleException(h, HandleError.Stale, "Another thread gave the block back at the same time; nothing was changed.");
        if (PageMeta.State(now) == PageState.Pooled)
            return new PageHandleException(h, HandleError.WrongState, "The block is sitting in a pool, not held by a caller.");
        return Busy(h); // it was Busy a moment ago and is held again: still two threads on one block
    }

    private static PageHandleException Busy(PageHandle h) => new(h, HandleError.WrongState,
        "Another thread is changing the caching of this block or giving it back right now; two threads must not use one block at once.");

    // Keep one wholly free arena mapped per zone; give the rest back. Called under the zone lock.
    private void UnmapEmptyArenas(ZoneState z)
    {
        Debug.Assert(z.Lock.IsHeldByCurrentThread);
        int empty = 0;
        for (int i = z.Mapped.Count - 1; i >= 0; i--)
        {
            var a = z.Mapped[i];
            if (!a.IsEmpty || ++empty <= SpareEmptyArenas) continue;
            a.Unmap();
            z.Mapped.RemoveAt(i);
            if (PagePoolEventSource.MemoryOn) PagePoolEventSource.Log.ArenaUnmapped((int)z.Zone, a.Index);
        }
    }

    // ---- handles -------------------------------------------------------------------------------------

    /// <summary>
    /// Rebuild a handle of this space from its <see cref="PageHandle.Value"/> (what pools keep in their magazines,
    /// or what a caller stored in a native array). The space attaches its identity: only a value this space produced
    /// gives a handle that passes its checks. A value whose space tag is not this space's is refused as foreign;
    /// 0 gives <see cref="PageHandle.Null"/>. Nothing else is checked here: a stale or forged value is refused when used.
    /// </summary>
    /// <exception cref="PageHandleException">The value was made by another memory space.</exception>
    /// <exception cref="ObjectDisposedException">This space was disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageHandle HandleOf(ulong value)
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowDisposed();
        if (value >> PageHandle.SpaceShift != _spaceTag) return ForeignValue(value);
        return new PageHandle(value, Serial);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageHandle ForeignValue(ulong value)
        => value == 0 ? PageHandle.Null
           : throw new PageHandleException(new PageHandle(value), HandleError.Foreign, "The value was made by another memory space.");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Arena ArenaOf(PageHandle h) => _arenas[h.Arena]!;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong* MetaOf(PageHandle h) => _arenas[h.Arena]!.MetaOf(h.Page);

    /// <summary>Pointer to the view of a block the caller is known to hold (no checks: internal fast path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* ViewOf(PageHandle h) => _arenas[h.Arena]!.View + ((nuint)h.Page << PageShift);

    /// <summary>
    /// True when a raw value this space made names a live block (held or pooled, not free) in its current
    /// generation. Never throws: for a device model that must drop an access to a page freed under it.
    /// </summary>
    internal bool IsLive(ulong raw)
    {
        if (Volatile.Read(ref _disposed) != 0 || raw >> PageHandle.SpaceShift != _spaceTag) return false;
        var h = new PageHandle(raw, Serial);
        int ai = h.Arena, page = h.Page, order = h.Order;
        if (ai >= _arenas.Length || _arenas[ai] is not { } a || order > MaxOrder || page >= a.Pages || (page & ((1 << order) - 1)) != 0)
            return false;
        ulong w = Volatile.Read(ref *a.MetaOf(page));
        return PageMeta.State(w) != PageState.Free && PageMeta.Order(w) == order
               && (PageMeta.Generation(w) & PageHandle.GenerationMask) == h.Generation;
    }

    /// <summary>
    /// Check that a handle names a block of this space: its space, arena, alignment and range.
    /// Says nothing about whether the block is live; see <see cref="ResolveLive"/>.
    /// </summary>
    internal ulong* Resolve(PageHandle h, out Arena arena)
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowDisposed();
        if (h.SpaceSerial != Serial || h.IsNull) ThrowNotOfThisSpace(h);
        int ai = h.Arena, page = h.Page, order = h.Order;
        if (ai >= _arenas.Length || _arenas[ai] is not { } a || order > MaxOrder || page >= a.Pages || (page & ((1 << order) - 1)) != 0)
            throw new PageHandleException(h, HandleError.Malformed, "No block of this memory space has that arena, page and order.");
        arena = a;
        return a.MetaOf(page);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    [DoesNotReturn]
    private void ThrowNotOfThisSpace(PageHandle h)
    {
        if (h.IsNull)
            throw new PageHandleException(h, HandleError.Malformed, "The null handle names no page.");
        if (h.SpaceSerial == 0)
            throw new PageHandleException(h, HandleError.Foreign,
                "It was rebuilt from a raw value alone; rebuild handles with PhysicalMemory.HandleOf of the memory space that made them.");
        throw new PageHandleException(h, HandleError.Foreign, h.SpaceSerial < Serial
            ? $"It was made by memory space {h.SpaceSerial}, this is space {Serial} (the other space may have been disposed since)."
            : $"It was made by memory space {h.SpaceSerial}, this is space {Serial}.");
    }

    /// <summary>
    /// Check that a handle names a live block in its current generation, held by a pool or a caller, and return
    /// its metadata word. Distinguishes a double free (the page was given back with this very handle) from a
    /// stale handle (the page has moved on since).
    /// </summary>
    internal ulong ResolveLive(PageHandle h, out Arena arena)
    {
        ulong* m = Resolve(h, out arena);
        ulong w = Volatile.Read(ref *m);
        uint gen = (uint)(PageMeta.Generation(w) & PageHandle.GenerationMask);
        if (gen != h.Generation)
            throw GenerationError(h, w);
        if (PageMeta.State(w) == PageState.Free)
            throw new PageHandleException(h, HandleError.Stale, "The block is free in the system allocator.");
        if (PageMeta.Order(w) != h.Order)
            throw new PageHandleException(h, HandleError.Mismatch, $"The block has order {PageMeta.Order(w)}, the handle says {h.Order}.");
        return w;
    }

    /// <summary>Classify a generation mismatch: one step behind and not handed out again is a double free.</summary>
    internal static PageHandleException GenerationError(PageHandle h, ulong w)
    {
        uint gen = (uint)(PageMeta.Generation(w) & PageHandle.GenerationMask);
        bool oneBehind = ((gen - h.Generation) & PageHandle.GenerationMask) == 1;
        return oneBehind && PageMeta.State(w) != PageState.Allocated
            ? new PageHandleException(h, HandleError.DoubleFree, "It was already given back; the handle must not be used again.")
            : new PageHandleException(h, HandleError.Stale, "The page was given back and has been handed out again since; the handle is out of date.");
    }

    /// <summary>Check a block is held by a caller (Allocated) in the handle's generation.</summary>
    private ulong ResolveHeld(PageHandle h, out Arena arena)
    {
        ulong w = ResolveLive(h, out arena);
        var state = PageMeta.State(w);
        if (state == PageState.Busy) throw Busy(h);
        if (state != PageState.Allocated)
            throw new PageHandleException(h, HandleError.WrongState, "The block is sitting in a pool, not held by a caller.");
        return w;
    }

    // ---- what a handle tells ---------------------------------------------------------------------------

    /// <summary>The frame number (pseudo-physical under Xen) of the block's first page.</summary>
    public ulong FrameOf(PageHandle h)
    {
        Resolve(h, out var a);
        return a.BaseFrame + (ulong)h.Page;
    }

    /// <summary>The physical (pseudo-physical under Xen) address of the block.</summary>
    public ulong PhysicalAddress(PageHandle h) => FrameOf(h) << PageShift;

    /// <summary>The machine address of the block's first page: the physical address, or the P2M's answer under Xen.</summary>
    public ulong MachineAddress(PageHandle h) => MachineFrameOf(FrameOf(h)) << PageShift;

    /// <summary>The machine frame behind any pseudo-physical frame (identity without Xen).</summary>
    public ulong MachineFrameOf(ulong pseudoFrame)
    {
        ThrowIfDisposed();
        return _p2m is null ? pseudoFrame : _p2m.ToMachine(pseudoFrame);
    }

    /// <summary>The zone of the block.</summary>
    public Zone ZoneOf(PageHandle h)
    {
        Resolve(h, out var a);
        return a.Zone;
    }

    /// <summary>The current caching mode of a live block.</summary>
    public CachingMode CachingOf(PageHandle h) => PageMeta.Caching(ResolveLive(h, out _));

    /// <summary>The view of a held block: the mapping callers read and write, valid in every caching mode.</summary>
    public Span<byte> GetSpan(PageHandle h)
    {
        ResolveHeld(h, out var a);
        return new Span<byte>(a.View + ((nuint)h.Page << PageShift), h.PageCount << PageShift);
    }

    /// <summary>
    /// <see cref="GetSpan"/>, <see cref="CachingOf"/> and <see cref="FrameOf"/> of a held block from one check of the
    /// handle (the DMA map path needs all three): its view (<see cref="PageHandle.PageCount"/> pages long), caching
    /// mode and first frame. Throws as <see cref="GetSpan"/> does.
    /// </summary>
    /// <remarks>
    /// The checks of <see cref="ResolveHeld"/> made inline, in one pass (the two calls cost ~15 ns of a ~230 ns
    /// bounce round trip); any failure goes to <see cref="ResolveHeld"/> itself for the precise error.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* HeldView(PageHandle h, out CachingMode caching, out ulong frame)
    {
        int ai = h.Arena, page = h.Page, order = h.Order;
        var arenas = _arenas;
        if (Volatile.Read(ref _disposed) == 0 && h.SpaceSerial == Serial && !h.IsNull && (uint)ai < (uint)arenas.Length
            && arenas[ai] is { } a && page < a.Pages && (page & ((1 << order) - 1)) == 0) // an order above MaxOrder never matches the page's own
        {
            ulong w = Volatile.Read(ref *a.MetaOf(page));
            if ((uint)(PageMeta.Generation(w) & PageHandle.GenerationMask) == h.Generation
                && PageMeta.State(w) == PageState.Allocated && PageMeta.Order(w) == order)
            {
                caching = PageMeta.Caching(w);
                frame = a.BaseFrame + (ulong)page;
                return a.View + ((nuint)page << PageShift);
            }
        }
        return HeldViewChecked(h, out caching, out frame);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* HeldViewChecked(PageHandle h, out CachingMode caching, out ulong frame)
    {
        ulong w = ResolveHeld(h, out var a); // throws for every handle the fast check refused but a racing change
        caching = PageMeta.Caching(w);
        frame = a.BaseFrame + (ulong)h.Page;
        return a.View + ((nuint)h.Page << PageShift);
    }

    /// <summary>
    /// The cached linear-map alias of a held block, checked: for a write-combined or uncached block this would be
    /// a cached and an uncached mapping of one page at once, and raises <see cref="DoubleMappingException"/> instead.
    /// </summary>
    public Span<byte> GetAliasSpan(PageHandle h)
    {
        ulong w = ResolveHeld(h, out var a);
        var caching = PageMeta.Caching(w);
        if (caching != CachingMode.WriteBack)
            throw new DoubleMappingException(h, caching);
        return new Span<byte>(a.Alias + ((nuint)h.Page << PageShift), h.PageCount << PageShift);
    }

    /// <summary>Change the caching of one held block: flush and unmap the alias, or restore it.</summary>
    public void SetCaching(PageHandle h, CachingMode mode) => SetCaching([h], mode);

    /// <summary>
    /// Change the caching of held blocks as one batch (one mprotect per contiguous run, one fence). Returns the runs
    /// changed. Every handle and the mode are checked before anything changes. The blocks are held Busy while they
    /// change: a second thread changing, freeing or releasing one of them at the same time gets a
    /// <see cref="PageHandleException"/> (<see cref="HandleError.WrongState"/>) and changes nothing.
    /// </summary>
    public int SetCaching(ReadOnlySpan<PageHandle> blocks, CachingMode mode)
    {
        CheckCaching(mode);
        EnterCall();
        try
        {
            foreach (var h in blocks) ResolveHeld(h, out _);
            Span<ulong> before = blocks.Length <= 256 ? stackalloc ulong[blocks.Length] : new ulong[blocks.Length];
            TakeBusy(blocks, before, allowPooled: false);
            try
            {
                return CachingTransition.Apply(this, blocks, mode);
            }
            finally
            {
                // Back to Allocated, and tell each owning pool what changed under its caller, even after a failure
                // half way: the pool's per-mode in-use counts follow what the pages really are.
                lock (_cachingListeners)
                    for (int i = 0; i < blocks.Length; i++)
                    {
                        ulong* m = MetaOf(blocks[i]);
                        ulong w = Volatile.Read(ref *m);
                        Volatile.Write(ref *m, PageMeta.WithState(w, PageState.Allocated));
                        CachingMode from = PageMeta.Caching(before[i]), to = PageMeta.Caching(w);
                        if (from != to && _cachingListeners.TryGetValue(PageMeta.Owner(w), out var listener))
                            listener.OnCachingChanged(from, to, blocks[i].PageCount);
                    }
            }
        }
        finally
        {
            ExitCall();
        }
    }

    private readonly Dictionary<int, ICachingListener> _cachingListeners = new();

    /// <summary>Be told when a caller changes the caching of a block this owner handed out.</summary>
    internal void AddCachingListener(int owner, ICachingListener listener)
    {
        ThrowIfDisposed();
        lock (_cachingListeners) _cachingListeners[owner] = listener;
    }

    internal void RemoveCachingListener(int owner)
    {
        lock (_cachingListeners) _cachingListeners.Remove(owner);
    }

    /// <summary>
    /// Write into a held block as its caching mode requires: plain stores for write-back, streaming stores for
    /// write-combined, and for uncached a flush of every line touched.
    /// </summary>
    public void Write(PageHandle h, int offset, ReadOnlySpan<byte> source)
    {
        ulong w = ResolveHeld(h, out var a);
        CheckRange(h, offset, source.Length);
        byte* dst = a.View + ((nuint)h.Page << PageShift) + offset;
        fixed (byte* src = source)
            StoreAs(PageMeta.Caching(w), dst, src, (nuint)source.Length);
    }

    /// <summary>Read from a held block's view.</summary>
    public void Read(PageHandle h, int offset, Span<byte> destination)
    {
        ResolveHeld(h, out var a);
        CheckRange(h, offset, destination.Length);
        new ReadOnlySpan<byte>(a.View + ((nuint)h.Page << PageShift) + offset, destination.Length).CopyTo(destination);
    }

    /// <summary>Store bytes the way a mapping of this caching mode does.</summary>
    internal static void StoreAs(CachingMode caching, byte* dst, byte* src, nuint length)
    {
        switch (caching)
        {
            case CachingMode.WriteBack:
                Buffer.MemoryCopy(src, dst, length, length);
                break;
            case CachingMode.WriteCombined:
                NonTemporal.Copy(dst, src, length);
                NonTemporal.StoreFence();
                break;
            default:
                Buffer.MemoryCopy(src, dst, length, length);
                Shim.Flush(dst, length);
                break;
        }
    }

    /// <summary>Zero a block the way a mapping of this caching mode does (TTM's clear on give).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ClearAs(CachingMode caching, byte* p, nuint length)
    {
        if (caching == CachingMode.WriteBack) PageClear.Clear(p, length);
        else ClearUncachedOrCombined(caching, p, length);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ClearUncachedOrCombined(CachingMode caching, byte* p, nuint length)
    {
        if (caching == CachingMode.WriteCombined)
        {
            NonTemporal.Zero(p, length);
            NonTemporal.StoreFence();
        }
        else
        {
            NativeMemory.Clear(p, length);
            Shim.Flush(p, length);
        }
    }

    private static void CheckRange(PageHandle h, int offset, int length)
    {
        int size = h.PageCount << PageShift;
        if (offset < 0 || length < 0 || offset > size - length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"The range [{offset}, {offset}+{length}) is outside the block of {size} bytes.");
    }

    // ---- Xen -------------------------------------------------------------------------------------------

    /// <summary>
    /// Under Xen, back a held block with machine-contiguous frames whose end lies below <paramref name="limitAddress"/>
    /// (xen_create_contiguous_region, what dma_alloc_coherent does for a 32-bit device). Without Xen the block is
    /// already contiguous and this only checks the limit. Returns the block's machine address, or false when no
    /// such frames are free.
    /// </summary>
    public bool TryMakeContiguous(PageHandle h, ulong limitAddress, out ulong machineAddress)
    {
        ResolveHeld(h, out var a);
        ulong frame = a.BaseFrame + (ulong)h.Page;
        if (_p2m is null)
        {
            machineAddress = frame << PageShift;
            return machineAddress + ((ulong)h.PageCount << PageShift) - 1 <= limitAddress;
        }
        if (Faults.FaultInjector.ShouldFail(Faults.FaultPoint.XenExchange))
        {
            machineAddress = 0;
            return false;
        }
        bool ok = _p2m.MakeContiguous(frame, h.Order, limitAddress, out ulong mfn);
        machineAddress = mfn << PageShift;
        return ok;
    }

    /// <summary>Undo <see cref="TryMakeContiguous"/> (xen_destroy_contiguous_region). False when it was not exchanged.</summary>
    public bool DestroyContiguous(PageHandle h)
    {
        ResolveLive(h, out var a);
        return _p2m is not null && _p2m.DestroyContiguous(a.BaseFrame + (ulong)h.Page);
    }

    /// <summary>True when 2^order pseudo frames from <paramref name="frame"/> are machine-contiguous.</summary>
    public bool IsMachineContiguous(ulong frame, int order)
    {
        if ((uint)order > MaxOrder)
            throw new ArgumentOutOfRangeException(nameof(order), order, $"The order must be 0..{MaxOrder}.");
        ulong first = MachineFrameOf(frame);
        for (ulong k = 1; k < 1UL << order; k++)
            if (MachineFrameOf(frame + k) != first + k) return false;
        return true;
    }

    /// <summary>The pseudo frame a machine frame backs (M2P); identity without Xen. False when it backs none.</summary>
    public bool TryPseudoFrameOf(ulong machineFrame, out ulong pseudoFrame)
    {
        ThrowIfDisposed();
        if (_p2m is null) { pseudoFrame = machineFrame; return true; }
        return _p2m.TryToPseudo(machineFrame, out pseudoFrame);
    }

    // ---- a pool going away (PoolAllocator.Dispose) ------------------------------------------------------

    /// <summary>
    /// Re-own every block <paramref name="owner"/> handed out that a caller still holds (Allocated) to owner 0, as
    /// if the caller had taken it from this space directly: the handle stays valid, <see cref="FreeBlock"/> takes it
    /// back, and a later pool that reuses the owner id cannot accept it. A pass over the metadata of every mapped
    /// arena. Returns the blocks and pages re-owned.
    /// </summary>
    internal (long Blocks, long Pages) Disown(int owner)
    {
        long blocks = 0, pages = 0;
        foreach (var z in _zones)
            lock (z.Lock)
                foreach (var a in z.Mapped)
                    for (int p = 0; p < a.Pages;)
                    {
                        ulong* m = a.MetaOf(p);
                        ulong w = Volatile.Read(ref *m);
                        if (PageMeta.State(w) != PageState.Allocated) { p++; continue; } // tails and free heads: step one
                        int order = PageMeta.Order(w);
                        if (PageMeta.Owner(w) == owner)
                        {
                            ulong orphan = PageMeta.Make(PageState.Allocated, PageMeta.Caching(w), order, 0, PageMeta.Generation(w));
                            if (Interlocked.CompareExchange(ref *m, orphan, w) != w) continue; // raced: read it again
                            blocks++;
                            pages += 1L << order;
                        }
                        p += 1 << order; // an allocated block's tail pages are never heads
                    }
        return (blocks, pages);
    }

    // ---- teardown --------------------------------------------------------------------------------------

    /// <summary>
    /// Give every arena back to the system (memory and file descriptors). Afterwards every member throws
    /// <see cref="ObjectDisposedException"/> and handles of this space are refused by every other space. Waits for
    /// calls that allocate, free or change caching to finish; see the class remarks for calls on the hot paths.
    /// A second Dispose does nothing.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        var wait = new SpinWait();
        while (Volatile.Read(ref _callsInside) != 0) wait.SpinOnce();
        foreach (var z in _zones)
            lock (z.Lock)
            {
                foreach (var a in z.Mapped)
                {
                    a.Retire();
                    if (PagePoolEventSource.MemoryOn) PagePoolEventSource.Log.ArenaUnmapped((int)z.Zone, a.Index);
                }
                z.Mapped.Clear();
            }
        // The arenas and their metadata stay reachable from this object: their finalizers release the rest.
    }
}
