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
/// Every block's metadata word (see <see cref="PageMeta"/>) changes by compare-and-swap only; this class owns
/// the Free state, the pools above own Pooled, callers own Allocated.
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

    private static readonly PhysicalMemory?[] s_spaces = new PhysicalMemory?[1 << PageHandle.SpaceBits];
    private static readonly Lock s_spacesLock = new();
    private static int s_lastSpaceId;

    private readonly Arena?[] _arenas;
    private readonly ZoneState[] _zones;
    private readonly XenP2M? _p2m;
    private readonly int _arenaPages;
    private int _disposed;

    internal readonly int SpaceId;

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
        int normalSlots = (int)Math.Min(Options.NormalBytes / Options.ArenaBytes, MaxArenas - dmaSlots);
        _zones =
        [
            new ZoneState(Zone.Dma32, 0, dmaSlots, Dma32BaseFrame, (long)dmaSlots * Options.ArenaBytes),
            new ZoneState(Zone.Normal, dmaSlots, normalSlots, NormalBaseFrame, (long)normalSlots * Options.ArenaBytes),
        ];
        _arenas = new Arena?[dmaSlots + normalSlots];
        if (Options.Xen)
            _p2m = new XenP2M(NormalBaseFrame + (ulong)normalSlots * (ulong)_arenaPages, Options.XenSeed);

        lock (s_spacesLock)
        {
            // Round-robin, so a disposed space's id is not reused at once and its old handles stay foreign.
            int id = -1;
            for (int k = 1; k < s_spaces.Length && id < 0; k++)
            {
                int candidate = (s_lastSpaceId + k) % s_spaces.Length;
                if (candidate != 0 && s_spaces[candidate] is null) id = candidate;
            }
            if (id < 0)
                throw new PagePoolException($"Too many live PhysicalMemory instances (at most {s_spaces.Length - 1}); dispose the ones you no longer use.");
            s_spaces[id] = this;
            SpaceId = s_lastSpaceId = id;
        }
    }

    /// <summary>True when this space emulates a Xen guest (pseudo-physical frames, scattered machine frames).</summary>
    public bool IsXen => _p2m is not null;

    /// <summary>Bytes currently mapped in arenas of a zone (mapped, not necessarily resident).</summary>
    public long MappedBytes(Zone zone)
    {
        var z = _zones[(int)zone];
        lock (z.Lock) return (long)z.Mapped.Count * Options.ArenaBytes;
    }

    /// <summary>Bytes handed out of a zone by the block allocator (to pools or callers).</summary>
    public long UsedBytes(Zone zone)
    {
        var z = _zones[(int)zone];
        lock (z.Lock)
        {
            long used = 0;
            foreach (var a in z.Mapped) used += (long)(a.Pages - a.FreePages) << PageShift;
            return used;
        }
    }

    /// <summary>The capacity of a zone in bytes.</summary>
    public long Capacity(Zone zone) => _zones[(int)zone].Capacity;

    // ---- the page allocator (slow path) --------------------------------------------------------------

    /// <summary>Allocate a block of 2^order pages from a zone, write-back, zeroed; throws when the zone is exhausted.</summary>
    public PageHandle AllocateBlock(Zone zone, int order)
        => TryAllocateBlock(zone, order, 0, out var h) ? h : throw new ZoneExhaustedException(zone, order, Capacity(zone));

    /// <summary>
    /// Allocate a block of 2^order pages held by <paramref name="owner"/> (a pool id, 0 for a direct caller).
    /// Fresh blocks read zero (their memfd range was never written or was punched out). False when the zone is full.
    /// </summary>
    internal bool TryAllocateBlock(Zone zone, int order, int owner, out PageHandle handle)
    {
        if ((uint)order > MaxOrder)
            throw new ArgumentOutOfRangeException(nameof(order), order, $"Order must be 0..{MaxOrder}.");
        var z = _zones[(int)zone];
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

        ulong* m = arena.MetaOf(page);
        ulong gen = PageMeta.Generation(Volatile.Read(ref *m));
        Volatile.Write(ref *m, PageMeta.Make(PageState.Allocated, CachingMode.WriteBack, order, owner, gen));
        handle = new PageHandle(SpaceId, arena.Index, page, order, gen);
        return true;
    }

    // Map an unused slot of the zone; null when the zone is at capacity. Called under the zone lock.
    private Arena? MapArena(ZoneState z)
    {
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

    /// <summary>Give a block back to the system (see <see cref="FreeBlocks"/>).</summary>
    public void FreeBlock(PageHandle block) => FreeBlocks([block], 0);

    /// <summary>
    /// Give blocks back to the system: caching back to write-back (batched), memory punched out of the memfd
    /// (RSS drops), blocks merged in the buddy allocator, and wholly free arenas unmapped beyond a spare one.
    /// Every handle is checked first; on any error nothing has changed.
    /// </summary>
    internal void FreeBlocks(ReadOnlySpan<PageHandle> blocks, int owner)
    {
        foreach (var h in blocks)
        {
            ulong w = ResolveLive(h, out _);
            if (PageMeta.Owner(w) != owner)
                throw new PageHandleException(h, HandleError.Foreign, $"The block belongs to pool {PageMeta.Owner(w)}, not {owner}.");
        }
        CachingTransition.Apply(this, blocks, CachingMode.WriteBack);

        // Commit: each block to Free with a new generation; undo on a lost race so nothing is half done.
        Span<ulong> old = blocks.Length <= 512 ? stackalloc ulong[blocks.Length] : new ulong[blocks.Length];
        for (int i = 0; i < blocks.Length; i++)
        {
            ulong* m = MetaOf(blocks[i]);
            ulong w = old[i] = Volatile.Read(ref *m);
            ulong next = PageMeta.NextGeneration(PageMeta.WithState(w, PageState.Free));
            if (PageMeta.State(w) == PageState.Free || (PageMeta.Generation(w) & PageHandle.GenerationMask) != blocks[i].Generation
                || Interlocked.CompareExchange(ref *m, next, w) != w)
            {
                for (int k = 0; k < i; k++) Volatile.Write(ref *MetaOf(blocks[k]), old[k]);
                throw new PageHandleException(blocks[i], HandleError.Stale, "Another thread gave the block back at the same time.");
            }
        }

        // Punch contiguous runs with one fallocate each, then hand the blocks to the buddy allocator.
        for (int i = 0; i < blocks.Length;)
        {
            var first = blocks[i];
            var arena = ArenaOf(first);
            int end = first.Page + first.PageCount, j = i + 1;
            while (j < blocks.Length && blocks[j].Arena == first.Arena && blocks[j].Page == end) end += blocks[j++].PageCount;
            arena.Discard(first.Page, end - first.Page);
            if (PagePoolEventSource.MemoryOn) PagePoolEventSource.Log.MemoryReturned((int)arena.Zone, end - first.Page);
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

    // Keep one wholly free arena mapped per zone; give the rest back. Called under the zone lock.
    private void UnmapEmptyArenas(ZoneState z)
    {
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
    /// The handle for a raw value this space produced (what pools keep in their magazines). Every handle a pool
    /// hands out is rebuilt here, so the space decides what identity a handle carries beyond its raw bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PageHandle HandleOf(ulong raw) => new(raw);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Arena ArenaOf(PageHandle h) => _arenas[h.Arena]!;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong* MetaOf(PageHandle h) => _arenas[h.Arena]!.MetaOf(h.Page);

    /// <summary>Pointer to the view of a block the caller is known to hold (no checks: internal fast path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* ViewOf(PageHandle h) => _arenas[h.Arena]!.View + ((nuint)h.Page << PageShift);

    /// <summary>
    /// Check that the bits of a handle name a block of this space: its space, arena, alignment and range.
    /// Says nothing about whether the block is live; see <see cref="ResolveLive"/>.
    /// </summary>
    internal ulong* Resolve(PageHandle h, out Arena arena)
    {
        if (h.IsNull)
            throw new PageHandleException(h, HandleError.Malformed, "The null handle names no page.");
        if (h.Space != SpaceId)
            throw new PageHandleException(h, HandleError.Foreign, $"It was made by memory space {h.Space}, this is space {SpaceId}.");
        int ai = h.Arena, page = h.Page, order = h.Order;
        if (ai >= _arenas.Length || _arenas[ai] is not { } a || order > MaxOrder || page >= a.Pages || (page & ((1 << order) - 1)) != 0)
            throw new PageHandleException(h, HandleError.Malformed, "No block of this space has that arena, page and order.");
        arena = a;
        return a.MetaOf(page);
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
        if (PageMeta.State(w) != PageState.Allocated)
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
    public ulong MachineAddress(PageHandle h) => (_p2m is null ? FrameOf(h) : _p2m.ToMachine(FrameOf(h))) << PageShift;

    /// <summary>The machine address of any pseudo-physical frame (identity without Xen).</summary>
    public ulong MachineFrameOf(ulong pseudoFrame) => _p2m is null ? pseudoFrame : _p2m.ToMachine(pseudoFrame);

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
    /// The cached linear-map alias of a held block, checked: for a write-combined or uncached block this is the
    /// double mapping of shared/seeds/003 and raises <see cref="DoubleMappingException"/> instead of aliasing.
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

    /// <summary>Change the caching of held blocks as one batch (one mprotect per contiguous run, one fence). Returns the runs changed.</summary>
    public int SetCaching(ReadOnlySpan<PageHandle> blocks, CachingMode mode)
    {
        foreach (var h in blocks) ResolveHeld(h, out _);
        if (_cachingListeners.Count == 0) return CachingTransition.Apply(this, blocks, mode);

        // Tell each owning pool which pages changed mode under its caller, so per-mode counts stay true.
        Span<ulong> before = blocks.Length <= 256 ? stackalloc ulong[blocks.Length] : new ulong[blocks.Length];
        for (int i = 0; i < blocks.Length; i++) before[i] = Volatile.Read(ref *MetaOf(blocks[i]));
        int runs = CachingTransition.Apply(this, blocks, mode);
        lock (_cachingListeners)
            for (int i = 0; i < blocks.Length; i++)
            {
                var from = PageMeta.Caching(before[i]);
                if (from != mode && _cachingListeners.TryGetValue(PageMeta.Owner(before[i]), out var listener))
                    listener.OnCachingChanged(from, mode, blocks[i].PageCount);
            }
        return runs;
    }

    private readonly Dictionary<int, ICachingListener> _cachingListeners = new();

    /// <summary>Be told when a caller changes the caching of a block this owner handed out.</summary>
    internal void AddCachingListener(int owner, ICachingListener listener)
    {
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
        ulong first = MachineFrameOf(frame);
        for (ulong k = 1; k < 1UL << order; k++)
            if (MachineFrameOf(frame + k) != first + k) return false;
        return true;
    }

    /// <summary>The pseudo frame a machine frame backs (M2P); identity without Xen. False when it backs none.</summary>
    public bool TryPseudoFrameOf(ulong machineFrame, out ulong pseudoFrame)
    {
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

    /// <summary>Unmap every arena and free the metadata. Handles of this space are foreign afterwards.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var z in _zones)
            lock (z.Lock) { foreach (var a in z.Mapped) a.Unmap(); z.Mapped.Clear(); }
        foreach (var a in _arenas) a?.FreeMeta();
        lock (s_spacesLock) s_spaces[SpaceId] = null;
    }
}
