using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>
/// The DMA API checker (Linux kernel/dma/debug.c): it tracks every mapping of every device and reports misuse,
/// naming the device, address, size and direction. Beyond Linux it reports a CPU read of a bounced buffer the
/// device wrote without sync_for_cpu, use of the cached alias of a write-combined or uncached page, a DMA-pool page
/// given to the wrong pool, and device access through a stale IOTLB entry.
/// </summary>
/// <remarks>
/// Reports are recorded, never thrown, as dma-debug warns and goes on: the operation itself then succeeds or raises
/// its own typed error. When the platform runs without a checker the DMA paths test one null reference and do
/// nothing else.
/// </remarks>
public sealed class DmaChecker
{
    // Four kinds of state, each under its own locks, so devices on different CPUs do not serialise on one: the
    // reports; per device, its mappings (a table of its own, as dma-debug's hash buckets each have a lock); the
    // cache lines writable mappings hold, striped by page; and the bounced mappings written and not yet synced.
    // Lock order: a device's table, then the dirty set.
    private readonly Lock _reportLock = new();
    private readonly List<DmaCheckReport> _reports = new();
    private readonly LineStripe[] _lines = new LineStripe[LineStripes];
    private readonly Lock _dirtyLock = new();
    private readonly HashSet<Entry> _dirty = new(); // bounced mappings the device wrote since the CPU last synced
    private readonly PhysicalMemory _memory;

    internal DmaChecker(PhysicalMemory memory)
    {
        _memory = memory;
        for (int i = 0; i < _lines.Length; i++) _lines[i] = new LineStripe();
    }

    internal sealed class Entry(DmaDevice device, ulong start)
    {
        internal readonly DmaDevice Device = device;
        internal readonly ulong Start = start; // the DMA address the mapping was made at (the unmap's key)
        internal DmaMapKind Kind;
        internal PageHandle Block;
        internal int Offset, Size, Nents;
        internal ulong CpuPhys;
        internal DmaDirection Direction;
        internal bool Bounced, ErrorChecked, DeviceDirty;
        internal int Level; // the level of buckets its table indexes it at, or -1 when on the unbucketed list
        internal long Seen; // the table's lookup stamp when a lookup last took it as a candidate (under the table's lock)
        internal (ulong Dma, int Length)[]? Segments; // a scatterlist's entries where they do not follow each other from the first
        internal Part[]? Parts; // with Segments: each entry's buffer, whether it bounced, and whether the device wrote it since the last sync

        // The end of the part of this mapping that holds `dma`: the mapping's end, or its segment's for a
        // scatterlist whose entries do not follow each other; 0 when none holds it.
        internal ulong EndHolding(ulong dma)
        {
            if (Segments is null) return dma >= Start && dma < Start + (ulong)Size ? Start + (ulong)Size : 0;
            foreach (var (a, n) in Segments)
                if (dma >= a && dma < a + (ulong)n) return a + (ulong)n;
            return 0;
        }

        // Does a device access of [dma, dma+length) touch this mapping?
        internal bool Touches(ulong dma, int length)
        {
            if (Segments is null) return dma < Start + (ulong)Size && dma + (ulong)length > Start;
            foreach (var (a, n) in Segments)
                if (dma < a + (ulong)n && dma + (ulong)length > a) return true;
            return false;
        }

        // The DMA ranges the mapping covers: the whole, or each segment.
        internal int RangeCount => Segments?.Length ?? 1;
        internal (ulong Dma, int Length) Range(int i) => Segments is null ? (Start, Size) : Segments[i];
    }

    /// <summary>
    /// A scatterlist entry as the CPU sees it (its block and offset; its length is its segment's), whether its
    /// mapping bounced, and whether the device wrote it since the CPU last synced. A scatterlist's entries lie in
    /// different blocks, and under Xen only some of them may bounce, so a CPU read is matched against each entry,
    /// not against the first.
    /// </summary>
    internal struct Part(PageHandle block, int offset, bool bounced)
    {
        internal readonly PageHandle Block = block;
        internal readonly int Offset = offset;
        internal readonly bool Bounced = bounced;
        internal bool Dirty;
    }

    // One device's mappings: by start address (unmap, the mapping-error check), and by the DMA buckets they cover
    // (dma-debug hashes by 8 KiB, HASH_FN_SHIFT), so a sync or a device access looks at the mappings near its address
    // instead of all of them. Buckets come in levels, each 64 times the one below (8 KiB, 512 KiB, 32 MiB): a mapping
    // is indexed at the first level where it spans at most MaxIndexedBuckets buckets, so it is in at most 64 lists,
    // and a lookup reads the few buckets its range spans at each level that holds a mapping. Only a mapping of more
    // than 64 buckets of 32 MiB (2 GiB, or a scatterlist whose entries are as far apart) goes on the list every lookup
    // reads.
    internal sealed class DeviceTable
    {
        internal readonly Lock Lock = new();
        private readonly Dictionary<ulong, Entry> Starts = new();
        private readonly Dictionary<ulong, List<Entry>>[] Buckets = [new(), new(), new()];
        private readonly int[] _atLevel = new int[Levels]; // mappings indexed at each level (a lookup skips an empty one)
        private readonly List<Entry> Unbucketed = new(); // mappings too spread for every level: every lookup reads them
        private readonly Stack<List<Entry>> _spare = new(); // emptied bucket lists, reused: a map allocates its entry only

        internal int Count => Starts.Count;

        /// <summary>Mappings indexed at each level of buckets, then on the list every lookup reads (tests).</summary>
        internal (int Level0, int Level1, int Level2, int Unbucketed) Shape => (_atLevel[0], _atLevel[1], _atLevel[2], Unbucketed.Count);

        internal bool TryGet(ulong dma, out Entry e) => Starts.TryGetValue(dma, out e!);

        internal bool TryRemove(ulong dma, out Entry e)
        {
            if (!Starts.Remove(dma, out e!)) return false;
            Unindex(e);
            return true;
        }

        // Every mapping, and the table emptied (the device is released).
        internal Entry[] TakeAll()
        {
            var all = Starts.Values.ToArray();
            Starts.Clear();
            foreach (var level in Buckets) level.Clear();
            Array.Clear(_atLevel);
            Unbucketed.Clear();
            return all;
        }

        // Index a mapping; returns the one it replaces at the same start (the caller gives back its lines and its
        // written mark), or null.
        internal Entry? Add(Entry e)
        {
            Entry? replaced = Starts.Remove(e.Start, out var old) ? old : null;
            if (replaced is not null) Unindex(replaced);
            Starts[e.Start] = e;
            e.Level = LevelOf(e);
            if (e.Level < 0) { Unbucketed.Add(e); return replaced; }
            _atLevel[e.Level]++;
            var buckets = Buckets[e.Level];
            int shift = ShiftOf(e.Level);
            for (int r = 0; r < e.RangeCount; r++)
            {
                var (dma, length) = e.Range(r);
                for (ulong b = dma >> shift; b <= LastByte(dma, length) >> shift; b++)
                {
                    if (!buckets.TryGetValue(b, out var list)) buckets[b] = list = _spare.Count > 0 ? _spare.Pop() : new List<Entry>(2);
                    if (!list.Contains(e)) list.Add(e); // two segments may share a bucket
                }
            }
            return replaced;
        }

        private void Unindex(Entry e)
        {
            if (e.Level < 0) { Unbucketed.Remove(e); return; }
            _atLevel[e.Level]--;
            var buckets = Buckets[e.Level];
            int shift = ShiftOf(e.Level);
            for (int r = 0; r < e.RangeCount; r++)
            {
                var (dma, length) = e.Range(r);
                for (ulong b = dma >> shift; b <= LastByte(dma, length) >> shift; b++)
                    if (buckets.TryGetValue(b, out var list) && list.Remove(e) && list.Count == 0)
                    {
                        buckets.Remove(b);
                        if (_spare.Count < MaxSpareLists) _spare.Push(list);
                    }
            }
        }

        // Every mapping that may hold a byte of [dma, dma + length): those in its buckets at each level, and the
        // unbucketed ones, each once (a mapping in several of the buckets is stamped when first taken: no search of
        // the list).
        internal void Near(ulong dma, int length, List<Entry> into)
        {
            into.Clear();
            long stamp = ++_stamp; // 64 bits: never wraps back to the 0 of a mapping no lookup has taken yet
            AddNew(Unbucketed, into, stamp);
            ulong end = LastByte(dma, length);
            if (end < dma) end = ulong.MaxValue; // a range that wraps: to the top
            for (int level = 0; level < Levels; level++)
            {
                if (_atLevel[level] == 0) continue;
                var buckets = Buckets[level];
                int shift = ShiftOf(level);
                ulong first = dma >> shift, last = end >> shift;
                if (last - first >= (ulong)buckets.Count)
                {
                    // A long access over few mappings: read the buckets there are rather than every one it spans.
                    foreach (var (b, list) in buckets)
                        if (b >= first && b <= last) AddNew(list, into, stamp);
                    continue;
                }
                for (ulong b = first; b <= last; b++)
                    if (buckets.TryGetValue(b, out var list)) AddNew(list, into, stamp);
            }
        }

        private long _stamp;

        private static void AddNew(List<Entry> list, List<Entry> into, long stamp)
        {
            foreach (var e in list)
                if (e.Seen != stamp)
                {
                    e.Seen = stamp;
                    into.Add(e);
                }
        }

        private static int ShiftOf(int level) => BucketShift + level * LevelShift;

        // The last DMA address of a range; a 0-length range counts as its first byte.
        private static ulong LastByte(ulong dma, int length) => dma + (ulong)Math.Max(length, 1) - 1;

        // The first level at which the mapping spans at most MaxIndexedBuckets buckets, or -1 (unbucketed).
        private static int LevelOf(Entry e)
        {
            for (int level = 0; level < Levels; level++)
                if (BucketSpan(e, ShiftOf(level)) <= MaxIndexedBuckets) return level;
            return -1;
        }

        // The buckets the mapping's ranges cover, a bucket shared with the range before counted once (a scatterlist
        // of neighbouring entries, one per page, covers its span's buckets, not one per entry); stops past the limit.
        private static ulong BucketSpan(Entry e, int shift)
        {
            ulong total = 0, previousLast = 0;
            for (int r = 0; r < e.RangeCount && total <= MaxIndexedBuckets; r++)
            {
                var (dma, length) = e.Range(r);
                ulong first = dma >> shift, last = LastByte(dma, length) >> shift;
                if (r > 0 && first == previousLast) first++; // follows on in the bucket the range before ended in
                if (last >= first) total += last - first + 1;
                previousLast = last;
            }
            return total;
        }
    }

    private const int BucketShift = 13, LevelShift = 6, Levels = 3, MaxIndexedBuckets = 64, MaxSpareLists = 64;

    // Cache lines held by writable mappings, in stripes by page: the lines of one 4 KiB mapping are under one lock.
    private sealed class LineStripe
    {
        internal readonly Lock Lock = new();
        internal readonly Dictionary<ulong, int> Active = new(); // physical cache line -> active writable mappings
    }

    private const int LineStripes = 64;

    private LineStripe StripeOf(ulong line) => _lines[(int)((line >> 6) * 0x9E3779B97F4A7C15UL >> 58)];

    // A scratch list per thread for the candidates of a lookup (a sync or a device access allocates none).
    [ThreadStatic] private static List<Entry>? t_near;

    /// <summary>The mappings this thread's last sync or device access looked at (tests: the lookup stays local).</summary>
    [ThreadStatic] internal static int LastCandidates;

    /// <summary>Every report so far, oldest first (a snapshot).</summary>
    public IReadOnlyList<DmaCheckReport> Reports
    {
        get { lock (_reportLock) return _reports.ToArray(); }
    }

    /// <summary>How many reports were made (cheaper than <see cref="Reports"/>).</summary>
    public int ReportCount
    {
        get { lock (_reportLock) return _reports.Count; }
    }

    /// <summary>How many reports of one class were made.</summary>
    public int CountOf(DmaCheckClass c)
    {
        lock (_reportLock) return _reports.Count(r => r.Class == c);
    }

    /// <summary>Forget the reports made so far (tracked mappings stay).</summary>
    public void ClearReports()
    {
        lock (_reportLock) _reports.Clear();
    }

    /// <summary>Mappings the checker tracks for a device of its platform now.</summary>
    /// <exception cref="ArgumentException">The device is on another platform (or one without a checker).</exception>
    public int ActiveMappings(DmaDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device.Platform.Checker != this)
            throw new ArgumentException($"Device '{device.Name}' is on another DMA platform, or one without a checker: this checker tracks none of its mappings.", nameof(device));
        var t = Of(device);
        lock (t.Lock) return t.Count;
    }

    /// <summary>Bounced mappings the device wrote that the CPU has not synced since (tests).</summary>
    internal int DirtyMappings
    {
        get { lock (_dirtyLock) return _dirty.Count; }
    }

    internal void Report(DmaCheckClass c, DmaDevice d, ulong address, long size, DmaDirection dir, string message)
        => Report(c, d.Name, address, size, dir, message);

    private void Report(DmaCheckClass c, string device, ulong address, long size, DmaDirection dir, string message)
    {
        var r = new DmaCheckReport(c, device, address, size, dir, message);
        lock (_reportLock) _reports.Add(r);
        if (Diagnostics.PagePoolEventSource.DmaOn) Diagnostics.PagePoolEventSource.Log.DmaCheckReported(device, (long)c, (long)address, size);
    }

    // Each device carries its table from creation (DmaDevice.CheckerTable): no lookup of the device on any call.
    private static DeviceTable Of(DmaDevice d) => d.CheckerTable!;

    // A mapping the device can write holds its cache lines; two such on one line race with the CPU (debug.c active_cacheline).
    private const int LineShift = 6;

    // Only mappings the device may write hold lines; scatterlists span several blocks and are not line-tracked here.
    private static bool Tracked(DmaMapKind kind, DmaDirection dir) =>
        dir != DmaDirection.ToDevice && kind is DmaMapKind.Page or DmaMapKind.Single;

    // Take (+1) or give back (-1) the lines of a tracked mapping; true when a line was already held by another.
    private bool HoldLines(Entry e, int delta)
    {
        bool overlap = false;
        ulong first = e.CpuPhys >> LineShift, last = (e.CpuPhys + (ulong)e.Size - 1) >> LineShift;
        for (ulong line = first; line <= last;)
        {
            var stripe = StripeOf(line);
            ulong pageEnd = Math.Min(last, line | 63); // the lines of this page share a stripe
            lock (stripe.Lock)
                for (; line <= pageEnd; line++)
                {
                    stripe.Active.TryGetValue(line, out int n);
                    if (delta > 0 && n > 0) overlap = true;
                    n += delta;
                    if (n <= 0) stripe.Active.Remove(line);
                    else stripe.Active[line] = n;
                }
        }
        return overlap;
    }

    internal void OnMap(DmaDevice d, DmaMapKind kind, ulong dma, PageHandle block, int offset, int size, DmaDirection dir, bool bounced, int nents,
                        (ulong Dma, int Length)[]? segments = null, Part[]? parts = null)
    {
        System.Diagnostics.Debug.Assert(parts is null || (segments is not null && parts.Length == segments.Length), "a part per segment");
        var e = new Entry(d, dma)
        {
            Kind = kind, Block = block, Offset = offset, Size = size, Nents = nents, CpuPhys = _memory.PhysicalAddress(block) + (ulong)offset,
            Direction = dir, Bounced = bounced, ErrorChecked = kind is DmaMapKind.Coherent or DmaMapKind.Scatterlist, // dma-debug asks the check of map_page/map_single only
            Segments = segments, Parts = parts,
        };
        var t = Of(d);
        bool overlap;
        lock (t.Lock)
        {
            Forget(t.Add(e));
            overlap = Tracked(kind, dir) && HoldLines(e, +1); // under the table's lock: an unmap of it gives back what it took
        }
        if (overlap)
            Report(DmaCheckClass.OverlappingCacheline, d, dma, size, dir,
                $"the buffer at physical 0x{e.CpuPhys:x} shares a cache line with another active mapping the device may write; overlapping mappings are not supported");
    }

    internal void OnMappingErrorChecked(DmaDevice d, ulong dma)
    {
        var t = Of(d);
        lock (t.Lock)
            if (t.TryGet(dma, out var e)) e.ErrorChecked = true;
    }

    /// <summary>dma-debug check_unmap: every mismatch between the unmap call and the mapping it names.</summary>
    /// <remarks>
    /// Called before the ops undo the mapping, so the address is untracked before it can be handed out again; if
    /// the ops then refuse, <see cref="Restore"/> puts the returned entry back.
    /// </remarks>
    internal object? OnUnmap(DmaDevice d, DmaMapKind kind, ulong dma, long size, DmaDirection dir, int nents, PageHandle block)
    {
        Entry? e = null;
        var t = Of(d);
        lock (t.Lock)
            if (t.TryRemove(dma, out e))
            {
                if (e.DeviceDirty)
                    lock (_dirtyLock) _dirty.Remove(e); // the flag stays: a refused unmap restores the mark with it
                if (Tracked(e.Kind, e.Direction)) HoldLines(e, -1);
            }
        if (e is null)
        {
            Report(DmaCheckClass.NeverMapped, d, dma, size, dir, $"{Verb(kind)} of memory the device never mapped (or already unmapped)");
            return null;
        }
        if (e.Kind != kind)
            Report(DmaCheckClass.WrongFunction, d, dma, size, dir, $"mapped with {Verb(e.Kind, true)} but undone with {Verb(kind)}");
        if (kind != DmaMapKind.Scatterlist && e.Size != size)
            Report(DmaCheckClass.WrongSize, d, dma, size, dir, $"mapped {e.Size} bytes but {Verb(kind)} says {size}");
        if (kind != DmaMapKind.Coherent && e.Direction != dir)
            Report(DmaCheckClass.WrongDirection, d, dma, size, dir, $"mapped {e.Direction} but {Verb(kind)} says {dir}");
        if (kind == DmaMapKind.Coherent && e.Block != block)
            Report(DmaCheckClass.DifferentCpuAddress, d, dma, size, dir, $"allocated as {e.Block} but freed as {block}");
        if (kind == DmaMapKind.Scatterlist && e.Nents != nents)
            Report(DmaCheckClass.ScatterlistCountMismatch, d, dma, size, dir, $"mapped with {e.Nents} entries but unmapped with {nents}");
        if (!e.ErrorChecked)
            Report(DmaCheckClass.MapErrorNotChecked, d, dma, size, dir, "the driver never checked this address with MappingError before unmapping");
        return e;
    }

    /// <summary>Track again a mapping whose unmap the ops refused (it is still in place).</summary>
    internal void Restore(DmaDevice d, ulong dma, object? entry)
    {
        if (entry is not Entry e) return;
        var t = Of(d);
        lock (t.Lock)
        {
            Forget(t.Add(e));
            if (e.DeviceDirty)
                lock (_dirtyLock) _dirty.Add(e);
            if (Tracked(e.Kind, e.Direction)) HoldLines(e, +1);
        }
    }

    // Under the table's lock: a mapping no longer in it gives back its cache lines and its written mark.
    private void Forget(Entry? gone)
    {
        if (gone is null) return;
        if (gone.DeviceDirty)
        {
            ClearDirty(gone);
            lock (_dirtyLock) _dirty.Remove(gone);
        }
        if (Tracked(gone.Kind, gone.Direction)) HoldLines(gone, -1);
    }

    /// <summary>dma-debug check_sync, and the end of a device write the CPU has not seen yet.</summary>
    internal void OnSync(DmaDevice d, ulong dma, int size, DmaDirection dir, bool forCpu)
    {
        Entry? e = null;
        bool outOfRange = false;
        var t = Of(d);
        var near = t_near ??= new List<Entry>();
        lock (t.Lock)
        {
            // Of the mappings holding the start, the one that best matches the call, as dma-debug's
            // __hash_bucket_find does: one covering the whole range, then one whose direction allows the call. With
            // overlapping mappings the first found may be another one, and a correct sync would be reported.
            t.Near(dma, 1, near);
            LastCandidates = near.Count;
            int best = -1;
            foreach (var x in near)
            {
                ulong holding = x.EndHolding(dma);
                if (holding == 0) continue;
                bool covers = dma + (ulong)size <= holding;
                int score = (covers ? 2 : 0) + (x.Direction == dir || x.Direction == DmaDirection.Bidirectional ? 1 : 0);
                if (score <= best) continue;
                best = score;
                e = x;
                outOfRange = !covers;
            }
            if (e is { DeviceDirty: true } && forCpu && !outOfRange)
            {
                ClearDirty(e);
                lock (_dirtyLock) _dirty.Remove(e);
            }
        }
        near.Clear();
        string fn = forCpu ? "sync_for_cpu" : "sync_for_device";
        if (e is null)
        {
            Report(DmaCheckClass.SyncUnmapped, d, dma, size, dir, $"{fn} of memory the device has not mapped");
            return;
        }
        if (outOfRange)
            Report(DmaCheckClass.SyncOutOfRange, d, dma, size, dir, $"{fn} runs past the mapping at 0x{e.Start:x} of {e.Size} bytes");
        if (e.Direction != DmaDirection.Bidirectional && e.Direction != dir)
            Report(DmaCheckClass.SyncWrongDirection, d, dma, size, dir, $"{fn} with {dir} of a mapping made {e.Direction}");
    }

    internal void OnDeviceWrite(DmaDevice d, ulong dma, int length)
    {
        var t = Of(d);
        var near = t_near ??= new List<Entry>();
        lock (t.Lock)
        {
            t.Near(dma, length, near);
            LastCandidates = near.Count;
            foreach (var x in near)
            {
                if (!x.Bounced || !x.Touches(dma, length)) continue;
                if (x.Parts is { } parts)
                {
                    bool wrote = false; // a bounced entry the write touched
                    for (int i = 0; i < parts.Length; i++)
                    {
                        var (a, n) = x.Segments![i];
                        if (!parts[i].Bounced || dma >= a + (ulong)n || dma + (ulong)length <= a) continue;
                        parts[i].Dirty = true;
                        wrote = true;
                    }
                    if (!wrote) continue;
                }
                if (x.DeviceDirty) continue;
                x.DeviceDirty = true;
                lock (_dirtyLock) _dirty.Add(x);
            }
        }
        near.Clear();
    }

    // Under the table's lock: the CPU has seen what the device wrote (a sync for the CPU), or the mapping is gone.
    private static void ClearDirty(Entry e)
    {
        e.DeviceDirty = false;
        if (e.Parts is { } parts)
            for (int i = 0; i < parts.Length; i++) parts[i].Dirty = false;
    }

    internal void OnCpuRead(PageHandle block, int offset, int length)
    {
        List<(Entry Mapping, ulong Dma, long Size)>? stale = null;
        lock (_dirtyLock)
            foreach (var x in _dirty) // only mappings the device wrote and the CPU has not synced: few
            {
                if (x.Parts is { } parts)
                {
                    // A scatterlist: each entry the device wrote through a bounce slot, in its own block.
                    for (int i = 0; i < parts.Length; i++)
                    {
                        var (dma, n) = x.Segments![i];
                        if (parts[i].Dirty && parts[i].Block == block && offset < parts[i].Offset + n && offset + length > parts[i].Offset)
                            (stale ??= new()).Add((x, dma, n));
                    }
                }
                else if (x.Block == block && offset < x.Offset + x.Size && offset + length > x.Offset)
                    (stale ??= new()).Add((x, x.Start, x.Size));
            }
        if (stale is null) return;
        foreach (var (x, dma, size) in stale)
            Report(DmaCheckClass.MissingSyncForCpu, x.Device, dma, size, x.Direction,
                "the CPU read a bounced buffer after the device wrote it, without sync_for_cpu: it sees the old data; " +
                "call SyncForCpu (or unmap) before reading, or use coherent memory");
    }

    internal void OnStaleIotlb(DmaDevice d, ulong dma, int size, bool write) =>
        Report(DmaCheckClass.StaleIotlbAccess, d, dma, size, write ? DmaDirection.FromDevice : DmaDirection.ToDevice,
            $"the device {(write ? "wrote" : "read")} through an IOTLB entry of an unmapped IOVA (deferred flush not yet done); " +
            "stop the device before unmapping, or use strict invalidation");

    internal void OnWrongPool(DmaDevice d, ulong dma, long size, string detail) =>
        Report(DmaCheckClass.WrongPool, d, dma, size, DmaDirection.Bidirectional, detail);

    internal void OnAlias(DmaDevice? d, PageHandle block, CachingMode caching) =>
        Report(DmaCheckClass.CachedAliasUse, d?.Name ?? "(cpu)", _memory.PhysicalAddress(block), (long)block.PageCount << PhysicalMemory.PageShift,
            DmaDirection.Bidirectional, $"the cached alias of a {caching} page {block} was used: it must be reached only through its view");

    internal void OnRelease(DmaDevice d)
    {
        var t = Of(d);
        Entry[] pending;
        lock (t.Lock)
        {
            pending = t.TakeAll();
            foreach (var e in pending) Forget(e);
        }
        foreach (var e in pending)
        {
            Report(DmaCheckClass.PendingAtRelease, d, e.Start, e.Size, e.Direction, $"still mapped ({Verb(e.Kind, true)}) when the device was released");
        }
    }

    private static string Verb(DmaMapKind k, bool map = false) => (k, map) switch
    {
        (DmaMapKind.Page, false) => "UnmapPage", (DmaMapKind.Page, true) => "MapPage",
        (DmaMapKind.Single, false) => "UnmapSingle", (DmaMapKind.Single, true) => "MapSingle",
        (DmaMapKind.Scatterlist, false) => "UnmapScatterlist", (DmaMapKind.Scatterlist, true) => "MapScatterlist",
        (_, false) => "FreeCoherent", _ => "AllocateCoherent",
    };
}
