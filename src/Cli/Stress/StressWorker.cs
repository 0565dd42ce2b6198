using System.Diagnostics;
using System.Runtime.InteropServices;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Cli.Stress;

/// <summary>
/// One stress thread: its seeded generator, the buffers it holds, and the operations scenarios compose. Every
/// operation is timed into the worker's own histograms and folded into its sequence hash (what it did, not what
/// it got back), so two runs with one seed and one operation count hash the same.
/// </summary>
internal sealed class StressWorker
{
    private readonly PoolAllocator _pool;
    private readonly PhysicalMemory _memory;
    private readonly StressSettings _settings;
    private readonly List<LiveBuffer> _live = new();
    private SplitMix _rng;
    private ulong _nextId;
    private long _liveBytes;

    internal readonly int Index;
    internal readonly long ShareBytes;
    internal readonly LatencyHistogram[] Latency = new LatencyHistogram[StressOps.Count];
    internal long Operations;                 // read racily by the progress line
    internal long Budget = long.MaxValue;     // operations this worker may do (--ops): steps never overshoot it
    internal ulong SequenceHash = 0xCBF29CE484222325UL;
    internal long VerifyFailures, ZoneExhausted, ScannedPages;
    internal readonly List<string> Failures = new();
    internal bool Injected;

    internal StressWorker(int index, PoolAllocator pool, StressSettings settings)
    {
        Index = index;
        _pool = pool;
        _memory = pool.Memory;
        _settings = settings;
        _rng = new SplitMix(settings.Seed * 0x9E3779B97F4A7C15UL + (ulong)index + 1);
        _nextId = ((ulong)index << 48) + 1;
        ShareBytes = settings.Scenario.PoolShareBytes(settings.WorkingSetBytes) / settings.Threads;
        for (int i = 0; i < Latency.Length; i++) Latency[i] = new LatencyHistogram();
    }

    internal int LiveCount => _live.Count;
    internal long LiveBytes => _liveBytes;

    /// <summary>A uniform number in [0, n).</summary>
    internal int Next(int n) => (int)(_rng.Next() % (ulong)n);

    internal CachingMode PickCaching() => _settings.CachingMix.Pick(Next(_settings.CachingMix.Total));

    internal int PickPages() => 1 << _settings.OrderMix.Pick(Next(_settings.OrderMix.Total));

    internal Zone PickZone() => Next(4) == 0 ? Zone.Dma32 : Zone.Normal;

    /// <summary>Fold one value of what the worker does into its sequence hash (FNV-1a over words).</summary>
    internal void Fold(ulong value) => SequenceHash = (SequenceHash ^ value) * 0x100000001B3UL;

    private void Note(StressOp op, long a, long b)
    {
        Fold((ulong)op);
        Fold((ulong)a);
        Fold((ulong)b);
        Operations++;
    }

    private void Time(StressOp op, long t0) => Latency[(int)op].Record((long)Stopwatch.GetElapsedTime(t0).TotalNanoseconds);

    /// <summary>Allocate a buffer; a single page sometimes takes the AllocatePage fast path.</summary>
    internal void Allocate(int pages, CachingMode caching, Zone zone)
    {
        bool single = pages == 1 && Next(2) == 0;
        Note(single ? StressOp.AllocatePage : StressOp.Allocate, pages, (long)caching * 2 + (long)zone);
        var blocks = new PageHandle[pages];
        int count;
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            if (single) { blocks[0] = _pool.AllocatePage(caching, zone); count = 1; }
            else count = _pool.Allocate(pages, caching, zone, blocks);
        }
        catch (ZoneExhaustedException)
        {
            ZoneExhausted++; // the zone is full: a legitimate outcome under load, counted and survived
            return;
        }
        Time(single ? StressOp.AllocatePage : StressOp.Allocate, t0);
        var buffer = new LiveBuffer(blocks, count, pages, caching, _nextId++);
        Fill(buffer);
        _live.Add(buffer);
        _liveBytes += (long)pages << PhysicalMemory.PageShift;
    }

    /// <summary>
    /// Allocate a buffer of a picked size, caching and zone if it fits this worker's share of the working set; when it
    /// does not, nothing is done (and no operation counted) and the caller releases instead. The command refuses a
    /// share smaller than the largest buffer the order mix asks for, so a worker holding nothing always allocates.
    /// </summary>
    internal bool TryAllocateWithinShare()
    {
        int pages = PickPages();
        CachingMode caching = PickCaching();
        Zone zone = PickZone();
        if (_liveBytes + ((long)pages << PhysicalMemory.PageShift) > ShareBytes) return false;
        Allocate(pages, caching, zone);
        return true;
    }

    /// <summary>Give back a random live buffer, checking its contents first.</summary>
    internal void ReleaseRandom()
    {
        if (_live.Count == 0) return;
        Release(Next(_live.Count));
    }

    private void Release(int index)
    {
        var b = _live[index];
        _live[index] = _live[^1];
        _live.RemoveAt(_live.Count - 1);
        _liveBytes -= (long)b.Pages << PhysicalMemory.PageShift;
        Note(StressOp.Release, b.Pages, (long)b.Caching);
        Check(b, "at release");
        long t0 = Stopwatch.GetTimestamp();
        _pool.Release(b.Handles, b.Caching);
        Time(StressOp.Release, t0);
    }

    /// <summary>Release random buffers until this worker holds no more than its share of the working set.</summary>
    internal void TrimToShare(long share)
    {
        while (_liveBytes > share && _live.Count > 0 && Operations < Budget) ReleaseRandom();
    }

    /// <summary>Switch a live buffer to another caching mode (one batched change); its bytes must survive.</summary>
    internal void SwitchRandom()
    {
        if (_live.Count == 0) return;
        var b = _live[Next(_live.Count)];
        var to = (CachingMode)(((int)b.Caching + 1 + Next(2)) % 3);
        Note(StressOp.Switch, b.Pages, (long)to);
        long t0 = Stopwatch.GetTimestamp();
        _memory.SetCaching(b.Handles, to);
        Time(StressOp.Switch, t0);
        b.Caching = to;
        Check(b, $"after switching to {to}");
    }

    /// <summary>Run the pool's shrinker: the next allocations find the pool cold.</summary>
    internal void Scan(long pages)
    {
        Note(StressOp.Scan, pages, 0);
        long t0 = Stopwatch.GetTimestamp();
        ScannedPages += _pool.Scan(pages);
        Time(StressOp.Scan, t0);
    }

    /// <summary>Flip one byte of a held buffer behind the library's back, so verification must catch it.</summary>
    internal void InjectCorruption()
    {
        if (Injected || _live.Count == 0) return;
        var b = _live[0];
        _memory.GetSpan(b.Blocks[0])[0] ^= 0xFF;
        Injected = true;
    }

    /// <summary>Release everything still held (checked), at the end of the run.</summary>
    internal void Finish()
    {
        while (_live.Count > 0) Release(_live.Count - 1);
    }

    // Every word of a verified buffer is a function of its id and position; otherwise each block's first word.
    private static ulong Word(ulong id, long index) => SplitMix.Mix(id * SplitMix.Golden + (ulong)index);

    private void Fill(LiveBuffer b)
    {
        Span<ulong> page = stackalloc ulong[PhysicalMemory.PageSize / 8];
        long word = 0;
        foreach (var h in b.Handles)
        {
            Span<byte> block = _memory.GetSpan(h);
            if (_settings.Verify)
            {
                if (block.IndexOfAnyExcept((byte)0) >= 0)
                    Fail($"{h} of buffer {b.Id} was not zero when handed out");
                for (int pg = 0; pg < h.PageCount; pg++)
                {
                    for (int i = 0; i < page.Length; i++) page[i] = Word(b.Id, word++);
                    CachingStores.Copy(b.Caching, MemoryMarshal.AsBytes(page), block.Slice(pg << PhysicalMemory.PageShift));
                }
            }
            else
            {
                if (MemoryMarshal.Read<ulong>(block) != 0) Fail($"{h} of buffer {b.Id} was not zero when handed out");
                ulong tag = Word(b.Id, word++);
                CachingStores.Copy(b.Caching, MemoryMarshal.AsBytes(new ReadOnlySpan<ulong>(in tag)), block);
            }
        }
    }

    private void Check(LiveBuffer b, string when)
    {
        long word = 0;
        foreach (var h in b.Handles)
        {
            var p = MemoryMarshal.Cast<byte, ulong>(_memory.GetSpan(h));
            long words = _settings.Verify ? (long)h.PageCount * (PhysicalMemory.PageSize / 8) : 1;
            for (int i = 0; i < words; i++)
                if (p[i] != Word(b.Id, word + i))
                {
                    Fail($"buffer {b.Id} ({b.Caching}, {b.Pages} pages) corrupt {when}: {h} word {i}");
                    return;
                }
            word += words;
        }
    }

    private void Fail(string message)
    {
        VerifyFailures++;
        if (Failures.Count < 8) Failures.Add(message);
    }
}
