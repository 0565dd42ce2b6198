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
    private readonly Lock _lock = new();
    private readonly List<DmaCheckReport> _reports = new();
    private readonly Dictionary<DmaDevice, Dictionary<ulong, Entry>> _entries = new();
    private readonly Dictionary<ulong, int> _activeLines = new(); // physical cache line -> active writable mappings
    private readonly PhysicalMemory _memory;

    internal DmaChecker(PhysicalMemory memory) => _memory = memory;

    private sealed class Entry
    {
        internal DmaMapKind Kind;
        internal PageHandle Block;
        internal int Offset, Size, Nents;
        internal ulong CpuPhys;
        internal DmaDirection Direction;
        internal bool Bounced, ErrorChecked, DeviceDirty;
        internal (ulong Dma, int Length)[]? Segments; // a scatterlist's entries where they do not follow each other from the first

        // The end of the part of this mapping (starting at `start`) that holds `dma`: the mapping's end, or its
        // segment's for a scatterlist whose entries do not follow each other; 0 when none holds it.
        internal ulong EndHolding(ulong start, ulong dma)
        {
            if (Segments is null) return dma >= start && dma < start + (ulong)Size ? start + (ulong)Size : 0;
            foreach (var (a, n) in Segments)
                if (dma >= a && dma < a + (ulong)n) return a + (ulong)n;
            return 0;
        }

        // Does a device access of [dma, dma+length) touch this mapping, which starts at `start`?
        internal bool Touches(ulong start, ulong dma, int length)
        {
            if (Segments is null) return dma < start + (ulong)Size && dma + (ulong)length > start;
            foreach (var (a, n) in Segments)
                if (dma < a + (ulong)n && dma + (ulong)length > a) return true;
            return false;
        }
    }

    /// <summary>Every report so far, oldest first (a snapshot).</summary>
    public IReadOnlyList<DmaCheckReport> Reports
    {
        get { lock (_lock) return _reports.ToArray(); }
    }

    /// <summary>How many reports were made (cheaper than <see cref="Reports"/>).</summary>
    public int ReportCount
    {
        get { lock (_lock) return _reports.Count; }
    }

    /// <summary>How many reports of one class were made.</summary>
    public int CountOf(DmaCheckClass c)
    {
        lock (_lock) return _reports.Count(r => r.Class == c);
    }

    /// <summary>Forget the reports made so far (tracked mappings stay).</summary>
    public void ClearReports()
    {
        lock (_lock) _reports.Clear();
    }

    /// <summary>Mappings the checker tracks for a device now.</summary>
    public int ActiveMappings(DmaDevice device)
    {
        lock (_lock) return _entries.TryGetValue(device, out var e) ? e.Count : 0;
    }

    internal void Report(DmaCheckClass c, DmaDevice d, ulong address, long size, DmaDirection dir, string message)
        => Report(c, d.Name, address, size, dir, message);

    private void Report(DmaCheckClass c, string device, ulong address, long size, DmaDirection dir, string message)
    {
        var r = new DmaCheckReport(c, device, address, size, dir, message);
        lock (_lock) _reports.Add(r);
        if (Diagnostics.PagePoolEventSource.DmaOn) Diagnostics.PagePoolEventSource.Log.DmaCheckReported(device, (long)c, (long)address, size);
    }

    private Dictionary<ulong, Entry> Of(DmaDevice d)
    {
        if (!_entries.TryGetValue(d, out var e)) _entries[d] = e = new Dictionary<ulong, Entry>();
        return e;
    }

    // A mapping the device can write holds its cache lines; two such on one line race with the CPU (debug.c active_cacheline).
    private const int LineShift = 6;

    // Only mappings the device may write hold lines; scatterlists span several blocks and are not line-tracked here.
    private static bool Tracked(DmaMapKind kind, DmaDirection dir) =>
        dir != DmaDirection.ToDevice && kind is DmaMapKind.Page or DmaMapKind.Single;

    internal void OnMap(DmaDevice d, DmaMapKind kind, ulong dma, PageHandle block, int offset, int size, DmaDirection dir, bool bounced, int nents,
                        (ulong Dma, int Length)[]? segments = null)
    {
        ulong cpu = _memory.PhysicalAddress(block) + (ulong)offset;
        bool overlap = false;
        lock (_lock)
        {
            Of(d)[dma] = new Entry
            {
                Kind = kind, Block = block, Offset = offset, Size = size, Nents = nents, CpuPhys = cpu,
                Direction = dir, Bounced = bounced, ErrorChecked = kind is DmaMapKind.Coherent or DmaMapKind.Scatterlist, // dma-debug asks the check of map_page/map_single only
                Segments = segments,
            };
            if (Tracked(kind, dir))
                for (ulong line = cpu >> LineShift; line <= (cpu + (ulong)size - 1) >> LineShift; line++)
                {
                    _activeLines.TryGetValue(line, out int n);
                    if (n > 0) overlap = true;
                    _activeLines[line] = n + 1;
                }
        }
        if (overlap)
            Report(DmaCheckClass.OverlappingCacheline, d, dma, size, dir,
                $"the buffer at physical 0x{cpu:x} shares a cache line with another active mapping the device may write; overlapping mappings are not supported");
    }

    internal void OnMappingErrorChecked(DmaDevice d, ulong dma)
    {
        lock (_lock)
            if (Of(d).TryGetValue(dma, out var e)) e.ErrorChecked = true;
    }

    /// <summary>dma-debug check_unmap: every mismatch between the unmap call and the mapping it names.</summary>
    /// <remarks>
    /// Called before the ops undo the mapping, so the address is untracked before it can be handed out again; if
    /// the ops then refuse, <see cref="Restore"/> puts the returned entry back.
    /// </remarks>
    internal object? OnUnmap(DmaDevice d, DmaMapKind kind, ulong dma, long size, DmaDirection dir, int nents, PageHandle block)
    {
        Entry? e;
        lock (_lock)
        {
            if (!Of(d).Remove(dma, out e)) e = null;
            else if (Tracked(e.Kind, e.Direction))
                for (ulong line = e.CpuPhys >> LineShift; line <= (e.CpuPhys + (ulong)e.Size - 1) >> LineShift; line++)
                    if (_activeLines.TryGetValue(line, out int n)) { if (n <= 1) _activeLines.Remove(line); else _activeLines[line] = n - 1; }
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
        lock (_lock)
        {
            Of(d)[dma] = e;
            if (Tracked(e.Kind, e.Direction))
                for (ulong line = e.CpuPhys >> LineShift; line <= (e.CpuPhys + (ulong)e.Size - 1) >> LineShift; line++)
                    _activeLines[line] = _activeLines.GetValueOrDefault(line) + 1;
        }
    }

    /// <summary>dma-debug check_sync, and the end of a device write the CPU has not seen yet.</summary>
    internal void OnSync(DmaDevice d, ulong dma, int size, DmaDirection dir, bool forCpu)
    {
        Entry? e = null;
        ulong start = 0;
        bool outOfRange = false;
        lock (_lock)
        {
            // Of the mappings holding the start, the one that best matches the call, as dma-debug's
            // __hash_bucket_find does: one covering the whole range, then one of the same direction. With overlapping
            // mappings the first found may be another one, and a correct sync would be reported.
            int best = -1;
            foreach (var (a, x) in Of(d))
            {
                ulong end = x.EndHolding(a, dma);
                if (end == 0) continue;
                bool covers = dma + (ulong)size <= end;
                int score = (covers ? 2 : 0) + (x.Direction == dir ? 1 : 0);
                if (score <= best) continue;
                best = score;
                e = x; start = a;
                outOfRange = !covers;
            }
            if (e is not null && forCpu && !outOfRange) e.DeviceDirty = false;
        }
        string fn = forCpu ? "sync_for_cpu" : "sync_for_device";
        if (e is null)
        {
            Report(DmaCheckClass.SyncUnmapped, d, dma, size, dir, $"{fn} of memory the device has not mapped");
            return;
        }
        if (outOfRange)
            Report(DmaCheckClass.SyncOutOfRange, d, dma, size, dir, $"{fn} runs past the mapping at 0x{start:x} of {e.Size} bytes");
        if (e.Direction != DmaDirection.Bidirectional && e.Direction != dir)
            Report(DmaCheckClass.SyncWrongDirection, d, dma, size, dir, $"{fn} with {dir} of a mapping made {e.Direction}");
    }

    internal void OnDeviceWrite(DmaDevice d, ulong dma, int length)
    {
        lock (_lock)
            foreach (var (a, x) in Of(d))
                if (x.Bounced && x.Touches(a, dma, length)) x.DeviceDirty = true;
    }

    internal void OnCpuRead(PageHandle block, int offset, int length)
    {
        List<(DmaDevice, ulong, Entry)>? stale = null;
        lock (_lock)
            foreach (var (d, map) in _entries)
                foreach (var (a, x) in map)
                    if (x.DeviceDirty && x.Block == block && offset < x.Offset + x.Size && offset + length > x.Offset)
                        (stale ??= new()).Add((d, a, x));
        if (stale is null) return;
        foreach (var (d, a, x) in stale)
            Report(DmaCheckClass.MissingSyncForCpu, d, a, x.Size, x.Direction,
                "the CPU read a bounced buffer after the device wrote it, without sync_for_cpu: it sees the old data; " +
                "call SyncForCpu (or unmap) before reading, or use coherent memory");
    }

    internal void OnStaleIotlb(DmaDevice d, ulong dma, bool write) =>
        Report(DmaCheckClass.StaleIotlbAccess, d, dma, 1, write ? DmaDirection.FromDevice : DmaDirection.ToDevice,
            $"the device {(write ? "wrote" : "read")} through an IOTLB entry of an unmapped IOVA (deferred flush not yet done); " +
            "stop the device before unmapping, or use strict invalidation");

    internal void OnWrongPool(DmaDevice d, ulong dma, long size, string detail) =>
        Report(DmaCheckClass.WrongPool, d, dma, size, DmaDirection.Bidirectional, detail);

    internal void OnAlias(DmaDevice? d, PageHandle block, CachingMode caching) =>
        Report(DmaCheckClass.CachedAliasUse, d?.Name ?? "(cpu)", _memory.PhysicalAddress(block), (long)block.PageCount << PhysicalMemory.PageShift,
            DmaDirection.Bidirectional, $"the cached alias of a {caching} page {block} was used: it must be reached only through its view");

    internal void OnRelease(DmaDevice d)
    {
        List<(ulong, Entry)> pending;
        lock (_lock)
        {
            if (!_entries.Remove(d, out var map)) return;
            pending = map.Select(kv => (kv.Key, kv.Value)).ToList();
            foreach (var (_, e) in pending)
                if (Tracked(e.Kind, e.Direction))
                    for (ulong line = e.CpuPhys >> LineShift; line <= (e.CpuPhys + (ulong)e.Size - 1) >> LineShift; line++)
                        if (_activeLines.TryGetValue(line, out int n)) { if (n <= 1) _activeLines.Remove(line); else _activeLines[line] = n - 1; }
        }
        foreach (var (a, e) in pending)
            Report(DmaCheckClass.PendingAtRelease, d, a, e.Size, e.Direction, $"still mapped ({Verb(e.Kind, true)}) when the device was released");
    }

    private static string Verb(DmaMapKind k, bool map = false) => (k, map) switch
    {
        (DmaMapKind.Page, false) => "UnmapPage", (DmaMapKind.Page, true) => "MapPage",
        (DmaMapKind.Single, false) => "UnmapSingle", (DmaMapKind.Single, true) => "MapSingle",
        (DmaMapKind.Scatterlist, false) => "UnmapScatterlist", (DmaMapKind.Scatterlist, true) => "MapScatterlist",
        (_, false) => "FreeCoherent", _ => "AllocateCoherent",
    };
}
