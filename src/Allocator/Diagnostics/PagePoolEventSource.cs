using System.Diagnostics.CodeAnalysis;
using System.Diagnostics.Tracing;

namespace PagePool.Diagnostics;

/// <summary>
/// The library's one EventSource, provider name "PagePool". It reports what is rare and worth seeing: pool
/// misses and refills, batched caching changes, shrinker scans, limit hits and memory given back to the system.
/// Nothing is written on the hit path unless the <see cref="Keywords.HitPath"/> keyword is enabled.
/// </summary>
/// <remarks>
/// Payloads are ints and longs (caching: 0 WB, 1 WC, 2 UC; zone: 0 DMA32, 1 normal) so the metadata every
/// decoder reads declares exactly what is written. Event ids are assigned in ranges per layer so layers added later never renumber: 1-19 pool, 20-39 memory and
/// caching, 40-59 shrinker, 100-199 DMA, 200-299 dma-debug checker, 300-399 buffer page arrays and swap.
/// Keywords likewise: low bits for the layers here, 0x100 and up reserved for DMA, checker and swap.
/// </remarks>
[EventSource(Name = ProviderName)]
public sealed class PagePoolEventSource : EventSource
{
    /// <summary>The stable provider name to enable with dotnet-trace or an EventListener.</summary>
    public const string ProviderName = "PagePool";

    /// <summary>The single instance.</summary>
    public static readonly PagePoolEventSource Log = new();

    private PagePoolEventSource() { }

    /// <summary>
    /// Create the source (once) so sessions can enable it. The enable flags live in <see cref="TraceFlags"/>, whose
    /// reads do not run this class's static constructor, so the library calls this when a memory space is made.
    /// </summary>
    internal static void EnsureCreated() => GC.KeepAlive(Log);

    private const string PrimitivesOnly = "Every payload is ints, longs or a string: nothing for the trimmer to remove.";

    /// <summary>Event groups.</summary>
    public static class Keywords
    {
        /// <summary>Pool misses, refills and limit hits.</summary>
        public const EventKeywords Pool = (EventKeywords)0x1;
        /// <summary>Batched caching changes.</summary>
        public const EventKeywords Caching = (EventKeywords)0x2;
        /// <summary>Shrinker scans.</summary>
        public const EventKeywords Shrinker = (EventKeywords)0x4;
        /// <summary>Arenas mapped and unmapped, memory returned to the system, zones exhausted.</summary>
        public const EventKeywords Memory = (EventKeywords)0x8;
        /// <summary>Every pool hit (verbose, costly at high rates; off unless asked for).</summary>
        public const EventKeywords HitPath = (EventKeywords)0x10;
        /// <summary>DMA faults, IOVA space and swiotlb exhaustion, checker reports.</summary>
        public const EventKeywords Dma = (EventKeywords)0x100;

        /// <summary>Buffer pages swapped out and in, evictions by the buffer limit or reclaim, swap faults.</summary>
        public const EventKeywords Swap = (EventKeywords)0x400;
    }

    // Swap events are per buffer operation (milliseconds apart at most): a plain IsEnabled check is cheap enough.
    internal bool SwapOn => IsEnabled(EventLevel.Informational, Keywords.Swap);

    // ---- buffer page arrays and swap: 300-399 ----

    /// <summary>A buffer's pages were written to the swap store and freed.</summary>
    [Event(300, Level = EventLevel.Informational, Keywords = Keywords.Swap, Message = "swapped out {0} pages ({1} bytes) in {2} ns")]
    public void SwapOut(long pages, long bytes, long nanoseconds) => WriteEvent(300, pages, bytes, nanoseconds);

    /// <summary>Pages of a buffer were read back from the swap store (one restore call, perhaps interrupted).</summary>
    [Event(301, Level = EventLevel.Informational, Keywords = Keywords.Swap, Message = "swapped in {0} pages ({1} bytes) in {2} ns")]
    public void SwapIn(long pages, long bytes, long nanoseconds) => WriteEvent(301, pages, bytes, nanoseconds);

    /// <summary>An idle buffer was swapped out (or purged) to make room under a limit or for reclaim.</summary>
    [Event(302, Level = EventLevel.Informational, Keywords = Keywords.Swap, Message = "evicted a buffer of {0} resident pages (purged {1}), {2} pages charged")]
    public void BufferEvicted(long pages, long purged, long chargedPages) => WriteEvent(302, pages, purged, chargedPages);

    // What listeners asked for, recomputed on every session change (see TraceFlags).
    internal static bool PoolOn => TraceFlags.Pool;
    internal static bool PoolVerboseOn => TraceFlags.PoolVerbose;
    internal static bool CachingOn => TraceFlags.Caching;
    internal static bool ShrinkerOn => TraceFlags.Shrinker;
    internal static bool MemoryOn => TraceFlags.Memory;
    internal static bool HitPathOn => TraceFlags.HitPath;
    internal static bool DmaOn => TraceFlags.Dma;

    /// <inheritdoc/>
    protected override void OnEventCommand(EventCommandEventArgs command)
    {
        TraceFlags.Pool = IsEnabled(EventLevel.Informational, Keywords.Pool);
        TraceFlags.PoolVerbose = IsEnabled(EventLevel.Verbose, Keywords.Pool);
        TraceFlags.Caching = IsEnabled(EventLevel.Informational, Keywords.Caching);
        TraceFlags.Shrinker = IsEnabled(EventLevel.Informational, Keywords.Shrinker);
        TraceFlags.Memory = IsEnabled(EventLevel.Informational, Keywords.Memory);
        // A session asking for "any keyword" (keywords 0, what a bare provider name sends, or all ones) also matches
        // a bit no event uses. EventPipe records none of our events for keywords 0, yet IsEnabled says yes: the hit
        // path, the one hot path with an event, is therefore traced only when HitPath is asked for by name.
        TraceFlags.HitPath = IsEnabled(EventLevel.Verbose, Keywords.HitPath) && !IsEnabled(EventLevel.Verbose, UnusedKeyword);
        TraceFlags.Dma = IsEnabled(EventLevel.Informational, Keywords.Dma);
    }

    // A keyword no event carries (bits from 0x100 are reserved for later layers; this one stays unused).
    private const EventKeywords UnusedKeyword = (EventKeywords)0x0000_4000_0000_0000;

    // ---- pool: 1-19 ----

    /// <summary>A pool type had nothing: a fresh block was taken from the system.</summary>
    [Event(1, Level = EventLevel.Informational, Keywords = Keywords.Pool, Message = "pool miss {0} order {1} {2}")]
    public void PoolMiss(int caching, int order, int zone) => WriteEvent(1, caching, order, zone);

    /// <summary>A core's cache took a full magazine from the depot.</summary>
    [Event(2, Level = EventLevel.Verbose, Keywords = Keywords.Pool, Message = "refill {0} order {1} {2}: {3} blocks")]
    public void PoolRefill(int caching, int order, int zone, int blocks) => WriteEvent(2, caching, order, zone, blocks);

    /// <summary>The pool went over its limit and trimmed back to it.</summary>
    [Event(3, Level = EventLevel.Informational, Keywords = Keywords.Pool, Message = "pool limit hit: {0} pages over {1}, freed {2}")]
    public void PoolLimitHit(long pooledPages, long limitPages, long freedPages) => WriteEvent(3, pooledPages, limitPages, freedPages);

    /// <summary>A pool hit (only with the HitPath keyword).</summary>
    [Event(4, Level = EventLevel.Verbose, Keywords = Keywords.HitPath, Message = "hit {0} order {1}")]
    public void PoolHit(int caching, int order) => WriteEvent(4, caching, order);

    /// <summary>A pool was disposed while callers still held pages of it (ttm_pool_fini's warning): they now belong to the memory space.</summary>
    [Event(5, Level = EventLevel.Warning, Keywords = Keywords.Pool, Message = "pool {0} disposed with {1} blocks ({2} pages) still held")]
    public void PoolDisposedWithPagesHeld(int pool, long blocks, long pages) => WriteEvent(5, pool, blocks, pages);

    // ---- memory and caching: 20-39 ----

    /// <summary>A batched caching change: pages, page-table runs, and how long it took.</summary>
    [Event(20, Level = EventLevel.Informational, Keywords = Keywords.Caching, Message = "caching -> {0}: {1} pages in {2} runs, {3} ns")]
    public void CachingTransition(int target, int pages, int runs, long nanoseconds) => WriteEvent(20, target, pages, runs, nanoseconds);

    /// <summary>Pages punched out of their arena: memory the kernel takes back now.</summary>
    [Event(21, Level = EventLevel.Informational, Keywords = Keywords.Memory, Message = "returned {1} pages of {0} to the system")]
    public void MemoryReturned(int zone, long pages) => WriteEvent(21, zone, pages);

    /// <summary>An arena was mapped.</summary>
    [Event(22, Level = EventLevel.Informational, Keywords = Keywords.Memory, Message = "arena {1} mapped in {0}, {2} bytes")]
    public void ArenaMapped(int zone, int arena, long bytes) => WriteEvent(22, zone, arena, bytes);

    /// <summary>A wholly free arena was unmapped.</summary>
    [Event(23, Level = EventLevel.Informational, Keywords = Keywords.Memory, Message = "arena {1} unmapped from {0}")]
    public void ArenaUnmapped(int zone, int arena) => WriteEvent(23, zone, arena);

    /// <summary>A zone could not satisfy an allocation.</summary>
    [Event(24, Level = EventLevel.Warning, Keywords = Keywords.Memory, Message = "{0} exhausted at order {1}")]
    public void ZoneExhausted(int zone, int order) => WriteEvent(24, zone, order);

    // ---- shrinker: 40-59 ----

    /// <summary>A shrinker scan: pages asked for, pages freed, time taken.</summary>
    [Event(40, Level = EventLevel.Informational, Keywords = Keywords.Shrinker, Message = "{0} scan: asked {1}, freed {2}, {3} ns")]
    public void ShrinkerScan(string shrinker, long asked, long freed, long nanoseconds) => WriteEvent(40, shrinker, asked, freed, nanoseconds);

    /// <summary>A pressure source changed its level (0 none, 1 low, 2 medium, 3 critical).</summary>
    [Event(41, Level = EventLevel.Informational, Keywords = Keywords.Shrinker, Message = "pressure from {0}: level {1}")]
    public void PressureChanged(string source, int level) => WriteEvent(41, source, level);

    /// <summary>A reclaim pass of the shrinker registry: the level that started it, its priority, pages freed, time.</summary>
    [Event(42, Level = EventLevel.Informational, Keywords = Keywords.Shrinker, Message = "reclaim pass at level {0}, priority {1}: freed {2} in {3} ns")]
    public void ReclaimPass(int level, int priority, long freed, long nanoseconds) => WriteEvent(42, level, priority, freed, nanoseconds);

    /// <summary>What one shrinker was asked for and freed in one reclaim pass.</summary>
    [Event(43, Level = EventLevel.Informational, Keywords = Keywords.Shrinker, Message = "{0} in a reclaim pass: asked {1}, freed {2}")]
    public void ShrinkerPassScanned(string shrinker, long asked, long freed) => WriteEvent(43, shrinker, asked, freed);

    /// <summary>A shrinker (or a pressure source) threw during reclaim; the reclaim thread went on.</summary>
    [Event(44, Level = EventLevel.Error, Keywords = Keywords.Shrinker, Message = "{0} failed during reclaim: {1}")]
    public void ShrinkerFailed(string shrinker, string error) => WriteEvent(44, shrinker, error);

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, int a, long b, long c)
    {
        EventData* data = stackalloc EventData[3];
        data[0] = new EventData { DataPointer = (nint)(&a), Size = 4 };
        data[1] = new EventData { DataPointer = (nint)(&b), Size = 8 };
        data[2] = new EventData { DataPointer = (nint)(&c), Size = 8 };
        WriteEventCore(id, 3, data);
    }

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, int a, int b, long c, long d)
    {
        EventData* data = stackalloc EventData[4];
        data[0] = new EventData { DataPointer = (nint)(&a), Size = 4 };
        data[1] = new EventData { DataPointer = (nint)(&b), Size = 4 };
        data[2] = new EventData { DataPointer = (nint)(&c), Size = 8 };
        data[3] = new EventData { DataPointer = (nint)(&d), Size = 8 };
        WriteEventCore(id, 4, data);
    }

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, string s, long a, long b)
    {
        fixed (char* p = s)
        {
            EventData* data = stackalloc EventData[3];
            data[0] = new EventData { DataPointer = (nint)p, Size = (s.Length + 1) * 2 };
            data[1] = new EventData { DataPointer = (nint)(&a), Size = 8 };
            data[2] = new EventData { DataPointer = (nint)(&b), Size = 8 };
            WriteEventCore(id, 3, data);
        }
    }

    // ---- DMA: 100-199 ----

    /// <summary>A device touched a DMA address it has no mapping for (stale: 1 when through a stale IOTLB entry).</summary>
    [Event(100, Level = EventLevel.Warning, Keywords = Keywords.Dma, Message = "DMA fault: {0} at 0x{1:x}, write {2}, stale {3}")]
    public void DmaFault(string device, long address, long write, long stale) => WriteEvent(100, device, address, write, stale);

    /// <summary>A device's IOVA space had no room even after flushing the IOVA caches.</summary>
    [Event(101, Level = EventLevel.Warning, Keywords = Keywords.Dma, Message = "{0}: IOVA space exhausted asking {1} pages, {2} of {3} used")]
    public void IovaExhausted(string device, long pages, long usedPages, long spacePages) => WriteEvent(101, device, pages, usedPages, spacePages);

    /// <summary>The swiotlb bounce pool had no room for a mapping.</summary>
    [Event(102, Level = EventLevel.Warning, Keywords = Keywords.Dma, Message = "{0}: swiotlb full asking {1} bytes, {2} of {3} used")]
    public void SwiotlbFull(string device, long bytes, long usedBytes, long poolBytes) => WriteEvent(102, device, bytes, usedBytes, poolBytes);

    /// <summary>The DMA checker reported a misuse (class: the DmaCheckClass value).</summary>
    [Event(103, Level = EventLevel.Warning, Keywords = Keywords.Dma, Message = "dma-check {1} on {0} at 0x{2:x}, {3} bytes")]
    public void DmaCheckReported(string device, long checkClass, long address, long size) => WriteEvent(103, device, checkClass, address, size);

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, int a, int b, int c, long d)
    {
        EventData* data = stackalloc EventData[4];
        data[0] = new EventData { DataPointer = (nint)(&a), Size = 4 };
        data[1] = new EventData { DataPointer = (nint)(&b), Size = 4 };
        data[2] = new EventData { DataPointer = (nint)(&c), Size = 4 };
        data[3] = new EventData { DataPointer = (nint)(&d), Size = 8 };
        WriteEventCore(id, 4, data);
    }

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, int a, int b, int c, int d)
    {
        EventData* data = stackalloc EventData[4];
        data[0] = new EventData { DataPointer = (nint)(&a), Size = 4 };
        data[1] = new EventData { DataPointer = (nint)(&b), Size = 4 };
        data[2] = new EventData { DataPointer = (nint)(&c), Size = 4 };
        data[3] = new EventData { DataPointer = (nint)(&d), Size = 4 };
        WriteEventCore(id, 4, data);
    }

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, int a, int b, long c)
    {
        EventData* data = stackalloc EventData[3];
        data[0] = new EventData { DataPointer = (nint)(&a), Size = 4 };
        data[1] = new EventData { DataPointer = (nint)(&b), Size = 4 };
        data[2] = new EventData { DataPointer = (nint)(&c), Size = 8 };
        WriteEventCore(id, 3, data);
    }

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, int a, long b)
    {
        EventData* data = stackalloc EventData[2];
        data[0] = new EventData { DataPointer = (nint)(&a), Size = 4 };
        data[1] = new EventData { DataPointer = (nint)(&b), Size = 8 };
        WriteEventCore(id, 2, data);
    }

    [NonEvent, UnconditionalSuppressMessage("Trimming", "IL2026", Justification = PrimitivesOnly)]
    private unsafe void WriteEvent(int id, string s, long a, long b, long c)
    {
        fixed (char* p = s)
        {
            EventData* data = stackalloc EventData[4];
            data[0] = new EventData { DataPointer = (nint)p, Size = (s.Length + 1) * 2 };
            data[1] = new EventData { DataPointer = (nint)(&a), Size = 8 };
            data[2] = new EventData { DataPointer = (nint)(&b), Size = 8 };
            data[3] = new EventData { DataPointer = (nint)(&c), Size = 8 };
            WriteEventCore(id, 4, data);
        }
    }
}

/// <summary>
/// The enable flags, in a class of plain zero-initialised statics with no static constructor: reading one is a
/// single load, with no class-initialisation check (which the EventSource class itself, holding Log, would need).
/// </summary>
internal static class TraceFlags
{
    internal static bool Pool, PoolVerbose, Caching, Shrinker, Memory, HitPath;
    internal static bool Dma;
}
