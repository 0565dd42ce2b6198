using PagePool.Memory;
using PagePool.Tt;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// The reference of page arrays (TTs) and their accounting, kept the obvious way: per array a state, a byte array
/// (with which pages are known: pages populated without ZeroAlloc hold whatever the pool had until written whole),
/// the pages in the store and the device it is bound to; for the accounting the charged counts and the LRU as a plain
/// list, coldest first; VRAM as one flag per page, first fit. Contents never depend on where the pages are: swapped,
/// moved to DMA32 or to VRAM, an array reads what was last written.
/// </summary>
public sealed class TtModel(long pageLimit, long dma32PageLimit, int vramPages)
{
    public sealed class Tt(int id, int tag, int pages, CachingMode caching, Zone zone, TtFlags flags)
    {
        public readonly int Id = id, Tag = tag, Pages = pages;
        public readonly CachingMode Caching = caching;
        public readonly TtFlags Flags = flags;
        public Zone Zone = zone;
        public TtState State = TtState.Unpopulated;
        public long Swapped;
        public readonly byte[] Bytes = new byte[(long)pages * PhysicalMemory.PageSize];
        public readonly bool[] Known = new bool[pages];
        /// <summary>The device index while bound, else -1.</summary>
        public int Device = -1;
        public int VramPage = -1;

        /// <summary>Pages in system memory (what the accounting charges).</summary>
        public long Resident => State is TtState.Unpopulated or TtState.DeviceLocal ? 0 : Pages - Swapped;

        public bool Purgeable => (Flags & TtFlags.Purgeable) != 0;

        public override string ToString() => $"tt {Id} ({Pages} pages, {State}, {Swapped} swapped, {Zone})";
    }

    private int _nextId;
    public readonly List<Tt> Live = new();
    /// <summary>Idle arrays with resident pages, least recently used first.</summary>
    public readonly List<Tt> Lru = new();
    public long Charged, Dma32Charged, Evictions;
    public readonly bool[] VramUsed = new bool[vramPages];

    public long SwappedPages => Live.Sum(t => t.Swapped);
    public long VramFreePages => VramUsed.Count(u => !u);

    public Tt Create(int tag, int pages, CachingMode caching, Zone zone, TtFlags flags)
    {
        var t = new Tt(_nextId++, tag, pages, caching, zone, flags);
        Live.Add(t);
        return t;
    }

    private void Touch(Tt t)
    {
        Lru.Remove(t);
        Lru.Add(t);
    }

    private void Uncharge(long pages, Zone zone)
    {
        Charged -= pages;
        if (zone == Zone.Dma32) Dma32Charged -= pages;
    }

    /// <summary>
    /// Charge pages for <paramref name="owner"/>: while over a limit, evict the coldest idle array (other than the
    /// owner; only a DMA32 one when only DMA32 is short). Null when charged, else the error (evictions done stay done).
    /// </summary>
    private Type? Charge(Tt owner, long pages, Zone zone)
    {
        bool dma32 = zone == Zone.Dma32;
        if (pages > pageLimit || (dma32 && pages > dma32PageLimit)) return typeof(TtOutOfMemoryException);
        while (true)
        {
            bool overAll = Charged + pages > pageLimit, overDma32 = dma32 && Dma32Charged + pages > dma32PageLimit;
            if (!overAll && !overDma32)
            {
                Charged += pages;
                if (dma32) Dma32Charged += pages;
                return null;
            }
            var victim = Lru.FirstOrDefault(t => t != owner && (!(overDma32 && !overAll) || t.Zone == Zone.Dma32));
            if (victim is null) return typeof(TtOutOfMemoryException);
            Evict(victim);
        }
    }

    // Reclaim of an idle array: a purgeable one loses its contents, any other goes whole to the store.
    private long Evict(Tt v)
    {
        long freed = v.Resident;
        if (v.Purgeable) Drop(v);
        else
        {
            v.Swapped += freed;
            Uncharge(freed, v.Zone);
            v.State = TtState.SwappedOut;
            Lru.Remove(v);
        }
        Evictions++;
        return freed;
    }

    private void Drop(Tt t)
    {
        Uncharge(t.Resident, t.Zone);
        t.Swapped = 0;
        t.State = TtState.Unpopulated;
        Array.Clear(t.Known);
        Lru.Remove(t);
    }

    public Type? Populate(Tt t)
    {
        if (t.State is not (TtState.Unpopulated or TtState.SwappedOut)) return typeof(TtStateException);
        Type? error;
        if (t.State == TtState.Unpopulated)
        {
            error = Charge(t, t.Pages, t.Zone);
            if (error is null)
            {
                t.State = TtState.Populated;
                bool zero = (t.Flags & TtFlags.ZeroAlloc) != 0;
                if (zero) Array.Clear(t.Bytes);
                Array.Fill(t.Known, zero);
            }
        }
        else
        {
            error = Charge(t, t.Swapped, t.Zone);
            if (error is null)
            {
                t.Swapped = 0;
                t.State = TtState.Populated;
            }
        }
        if (t.Resident > 0) Touch(t);
        return error;
    }

    /// <summary>Unpopulate and purge: one transition, from Populated or SwappedOut; the contents are gone.</summary>
    public Type? Unpopulate(Tt t)
    {
        if (t.State is not (TtState.Populated or TtState.SwappedOut)) return typeof(TtStateException);
        Drop(t);
        return null;
    }

    /// <summary>A CPU access: refused unless every page is resident (Populated or Bound), then the range is checked.</summary>
    public Type? Access(Tt t, long offset, int length, bool write)
    {
        if (t.State is not (TtState.Populated or TtState.Bound)) return typeof(TtStateException);
        if (offset < 0 || offset > t.Pages * (long)PhysicalMemory.PageSize - length) return typeof(ArgumentOutOfRangeException);
        if (t.State == TtState.Populated) Touch(t);
        return null;
    }

    /// <summary>Bytes written by the CPU or a device: pages covered whole become known.</summary>
    public static void Store(Tt t, long offset, ReadOnlySpan<byte> data)
    {
        data.CopyTo(t.Bytes.AsSpan((int)offset));
        for (long p = (offset + PhysicalMemory.PageSize - 1) / PhysicalMemory.PageSize; (p + 1) * PhysicalMemory.PageSize <= offset + data.Length; p++)
            t.Known[p] = true;
    }

    /// <summary>The checks of a swap-out before any page moves (a device-local array comes back to system memory first).</summary>
    public Type? SwapOutCheck(Tt t, long maxPages)
    {
        if (t.State == TtState.DeviceLocal && ToSystem(t) is { } e) return e;
        if (t.State is not (TtState.Populated or TtState.SwappedOut)) return typeof(TtStateException);
        if (maxPages < 0) return typeof(ArgumentOutOfRangeException);
        return null;
    }

    /// <summary>What the pages the real array chose to swap out do: they leave the charge; all gone, it leaves the LRU.</summary>
    public void SwapOutApply(Tt t, long pages)
    {
        if (pages == 0) return;
        t.Swapped += pages;
        Uncharge(pages, t.Zone);
        t.State = TtState.SwappedOut;
        if (t.Resident == 0) Lru.Remove(t);
    }

    /// <summary>
    /// Bind: only from Populated. A device that cannot reach the array's zone gets a DMA32 copy (charged as DMA32
    /// before the old pages go). Returns the error, and whether the pages were copied.
    /// </summary>
    public Type? Bind(Tt t, int device, bool reachesNormal, out bool copied)
    {
        copied = false;
        if (t.State != TtState.Populated) return typeof(TtStateException);
        if (t.Zone == Zone.Normal && !reachesNormal)
        {
            if (Charge(t, t.Pages, Zone.Dma32) is { } e) return e;
            Uncharge(t.Pages, Zone.Normal);
            t.Zone = Zone.Dma32;
            copied = true;
        }
        t.State = TtState.Bound;
        t.Device = device;
        Lru.Remove(t);
        return null;
    }

    public Type? Unbind(Tt t)
    {
        if (t.State != TtState.Bound) return typeof(TtStateException);
        t.State = TtState.Populated;
        t.Device = -1;
        Touch(t);
        return null;
    }

    /// <summary>Move to VRAM: only from Populated; first fit over free VRAM pages, else an error and nothing moves.</summary>
    public Type? ToVram(Tt t)
    {
        if (t.State != TtState.Populated) return typeof(TtStateException);
        int at = -1;
        for (int p = 0; p + t.Pages <= VramUsed.Length && at < 0; p++)
            if (VramUsed.AsSpan(p, t.Pages).IndexOf(true) < 0) at = p;
        if (at < 0) return typeof(PagePoolException);
        VramUsed.AsSpan(at, t.Pages).Fill(true);
        Uncharge(t.Pages, t.Zone);
        Lru.Remove(t);
        t.VramPage = at;
        t.State = TtState.DeviceLocal;
        return null;
    }

    public Type? ToSystem(Tt t)
    {
        if (t.State != TtState.DeviceLocal) return typeof(TtStateException);
        if (Charge(t, t.Pages, t.Zone) is { } e) return e;
        t.State = TtState.Populated;
        VramUsed.AsSpan(t.VramPage, t.Pages).Clear();
        t.VramPage = -1;
        Touch(t);
        return null;
    }

    /// <summary>Destroy: legal in every state; everything it holds goes back.</summary>
    public void Destroy(Tt t)
    {
        if (t.State == TtState.Bound) { t.State = TtState.Populated; t.Device = -1; }
        if (t.State == TtState.DeviceLocal)
        {
            VramUsed.AsSpan(t.VramPage, t.Pages).Clear();
            t.State = TtState.Unpopulated;
        }
        if (t.State != TtState.Unpopulated) Drop(t);
        Lru.Remove(t);
        Live.Remove(t);
    }

    /// <summary>The buffers' shrinker: evict coldest first until <paramref name="toScan"/> pages are freed or none is idle.</summary>
    public long Scan(long toScan)
    {
        long freed = 0;
        while (freed < toScan && Lru.Count > 0) freed += Evict(Lru[0]);
        return freed;
    }
}
