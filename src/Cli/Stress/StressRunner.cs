using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Shrinker;

namespace PagePool.Cli.Stress;

/// <summary>
/// Runs a scenario on N threads until the duration or the operation count is reached, shows progress, then
/// releases everything, checks the invariants (every page accounted for exactly once), prints the summary and
/// returns the exit code: 1 when verification failed or an invariant broke.
/// </summary>
internal static class StressRunner
{
    private static readonly string[] OpNames = ["alloc", "alloc_page", "release", "switch", "scan"];

    internal static int Run(StressSettings s)
    {
        s.Scenario.Configure(s);
        using var memory = new PhysicalMemory(new MemoryOptions
        {
            Dma32Bytes = Math.Min(2L << 30, Math.Max(64L << 20, s.WorkingSetBytes)),
            NormalBytes = SystemInfo.PhysicalMemoryBytes,
        });
        var shrinkers = s.Reclaim ? new ShrinkerRegistry { Observer = ReclaimEventForwarder.Instance } : null;
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = s.PoolLimitBytes }, shrinkers);
        using var reclaim = shrinkers is null ? null : new ReclaimThread(shrinkers, PressureSources.Detect());
        if (reclaim is not null)
        {
            foreach (var source in reclaim.Sources) Console.Error.WriteLine($"reclaim: {source.Name}: {source.Mode}");
            reclaim.Start();
        }
        var workers = new StressWorker[s.Threads];
        for (int i = 0; i < workers.Length; i++) workers[i] = new StressWorker(i, pool, s);
        s.Scenario.Start(pool, s);

        Console.Error.WriteLine($"stress {s.Scenario.Name}: {s.Threads} threads, {Describe(s)}, working set {Size.Format(s.WorkingSetBytes)}, " +
                                $"pool limit {Size.Format(s.PoolLimitBytes)}, seed {s.Seed}{(s.Verify ? ", verifying" : "")}");
        var clock = Stopwatch.StartNew();
        int stop = 0;
        long perThread = s.Operations is { } total ? total / s.Threads : long.MaxValue;
        var threads = new Thread[s.Threads];
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        for (int i = 0; i < threads.Length; i++)
        {
            var w = workers[i];
            long mine = s.Operations is { } t ? perThread + (i < t % s.Threads ? 1 : 0) : long.MaxValue;
            w.Budget = mine;
            threads[i] = new Thread(() =>
            {
                try
                {
                    while (w.Operations < mine && Volatile.Read(ref stop) == 0)
                    {
                        s.Scenario.Step(w);
                        if (s.InjectCorruption && w.Index == 0 && w.Operations >= 32) w.InjectCorruption();
                    }
                }
                catch (Exception e) when (e is PagePoolException or InvalidOperationException)
                {
                    errors.Enqueue(e);
                    Volatile.Write(ref stop, 1);
                }
            }) { Name = $"stress-{i}", IsBackground = true };
            threads[i].Start();
        }

        var progress = new Progress(pool, workers, clock);
        while (!threads.All(t => t.Join(progress.Interval)))
        {
            if (s.Duration is { } d && clock.Elapsed >= d) Volatile.Write(ref stop, 1);
            progress.Report();
        }
        var elapsed = clock.Elapsed;
        progress.Done();
        reclaim?.Stop();
        if (reclaim is not null) Console.Error.WriteLine($"reclaim: {reclaim.Passes:N0} passes freed {reclaim.Freed:N0} pages");

        // Give everything back (checked), then every page must be pooled or free: none lost, none twice.
        long ops = workers.Sum(w => w.Operations);
        foreach (var w in workers) w.Finish();
        var scenarioBroken = s.Scenario.Finish().ToList();
        var invariants = CheckInvariants(pool, memory);
        invariants.AddRange(scenarioBroken);
        foreach (var e in errors) invariants.Add($"{e.GetType().Name}: {e.Message}");
        var stats = pool.Statistics();

        var summary = new Summary(s, workers, stats, elapsed, ops, invariants);
        summary.Print();
        if (s.JsonPath is not null) summary.WriteJson(s.JsonPath);
        return summary.Ok ? ExitCodes.Ok : ExitCodes.Failed;
    }

    private static string Describe(StressSettings s)
        => s.Operations is { } n ? $"{n:N0} operations" : $"{s.Duration!.Value.TotalSeconds:0.###} s";

    private static List<string> CheckInvariants(PoolAllocator pool, PhysicalMemory memory)
    {
        var broken = new List<string>();
        try
        {
            long pooled = pool.Audit();
            long used = (memory.UsedBytes(Zone.Dma32) + memory.UsedBytes(Zone.Normal)) >> PhysicalMemory.PageShift;
            if (used != pooled)
                broken.Add($"the system has {used} pages handed out but the pool holds {pooled}: {used - pooled} pages unaccounted for");
            long inUse = pool.Statistics().Sum(x => x.InUsePages);
            if (inUse != 0) broken.Add($"the pool counts {inUse} pages in use after every buffer was released");
        }
        catch (InvalidOperationException e)
        {
            broken.Add(e.Message);
        }
        return broken;
    }

    /// <summary>A live line on a terminal (stderr), plain periodic lines otherwise.</summary>
    private sealed class Progress(PoolAllocator pool, StressWorker[] workers, Stopwatch clock)
    {
        private readonly bool _tty = !Console.IsErrorRedirected;
        private TimeSpan _lastLine;
        private long _lastOps;
        private TimeSpan _lastAt;

        internal TimeSpan Interval => TimeSpan.FromMilliseconds(_tty ? 250 : 100);

        internal void Report()
        {
            var now = clock.Elapsed;
            if (!_tty && now - _lastLine < TimeSpan.FromSeconds(1)) return;
            long ops = 0;
            foreach (var w in workers) ops += Volatile.Read(ref w.Operations);
            double rate = (ops - _lastOps) / Math.Max(1e-9, (now - _lastAt).TotalSeconds);
            _lastOps = ops;
            _lastAt = now;
            var stats = pool.Statistics();
            long hits = stats.Sum(x => x.Hits), misses = stats.Sum(x => x.Misses);
            string line = string.Create(CultureInfo.InvariantCulture,
                $"{now.TotalSeconds,6:0.0}s  {ops,10:N0} ops  {rate,9:N0} ops/s  pooled {Size.Format(pool.Count() * PhysicalMemory.PageSize),10}  " +
                $"rss {Size.Format(SystemInfo.ResidentBytes()),10}  hit {(hits + misses == 0 ? 0 : 100.0 * hits / (hits + misses)),5:0.0}%");
            if (_tty) Console.Error.Write("\r" + line + "  ");
            else Console.Error.WriteLine(line);
            _lastLine = now;
        }

        internal void Done()
        {
            if (_tty) Console.Error.WriteLine();
        }
    }

    private sealed class Summary(StressSettings s, StressWorker[] workers, IReadOnlyList<PoolTypeStatistics> stats,
        TimeSpan elapsed, long ops, List<string> invariants)
    {
        private readonly LatencyHistogram[] _merged = Merge(workers);
        private readonly long _verifyFailures = workers.Sum(w => w.VerifyFailures);
        private readonly ulong _hash = workers.Aggregate(0xCBF29CE484222325UL, (h, w) => (h ^ w.SequenceHash) * 0x100000001B3UL);
        private readonly long _hits = stats.Sum(x => x.Hits), _misses = stats.Sum(x => x.Misses);
        private readonly long _peakRss = PeakRss();

        internal bool Ok => _verifyFailures == 0 && invariants.Count == 0;

        private double HitRatio => _hits + _misses == 0 ? 0 : (double)_hits / (_hits + _misses);

        private static LatencyHistogram[] Merge(StressWorker[] workers)
        {
            var merged = new LatencyHistogram[StressWorker.OpKinds];
            for (int k = 0; k < merged.Length; k++)
            {
                merged[k] = new LatencyHistogram();
                foreach (var w in workers) merged[k].Merge(w.Latency[k]);
            }
            return merged;
        }

        // VmHWM: the kernel's own record of this process's peak resident set.
        private static long PeakRss()
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            return 0;
        }

        internal void Print()
        {
            var o = Console.Out;
            o.WriteLine();
            o.WriteLine($"scenario {s.Scenario.Name}, {s.Threads} threads, {elapsed.TotalSeconds:0.00} s, {ops:N0} operations ({ops / Math.Max(1e-9, elapsed.TotalSeconds):N0}/s), sequence {_hash:x16}");
            o.WriteLine();
            o.WriteLine($"{"operation",-11} {"count",12} {"per s",12} {"p50",10} {"p99",10} {"max",10}");
            for (int k = 0; k < _merged.Length; k++)
            {
                var h = _merged[k];
                if (h.Count == 0) continue;
                o.WriteLine($"{OpNames[k],-11} {h.Count,12:N0} {h.Count / elapsed.TotalSeconds,12:N0} {Ns(h.Percentile(0.50)),10} {Ns(h.Percentile(0.99)),10} {Ns(h.Max),10}");
            }
            o.WriteLine();
            o.WriteLine($"pool hit ratio        {HitRatio * 100:0.0}% ({_hits:N0} hits, {_misses:N0} misses)");
            o.WriteLine($"caching transitions   {stats.Sum(x => x.TransitionPages):N0} pages");
            o.WriteLine($"shrinker              {workers.Sum(w => w.ScannedPages):N0} pages freed by scans");
            o.WriteLine($"returned to system    {stats.Sum(x => x.ReturnedPages):N0} pages ({Size.Format(stats.Sum(x => x.ReturnedPages) * PhysicalMemory.PageSize)})");
            o.WriteLine($"zone exhausted        {workers.Sum(w => w.ZoneExhausted):N0} allocations");
            o.WriteLine($"peak rss              {Size.Format(_peakRss)}");
            foreach (var (_, text, _) in s.Scenario.Report()) if (text.Length > 0) o.WriteLine(text);
            o.WriteLine($"verification          {(s.Verify ? "every byte" : "first word of every block")}: {_verifyFailures} failures");
            foreach (var f in workers.SelectMany(w => w.Failures).Take(8)) o.WriteLine($"  {f}");
            o.WriteLine($"invariants            {(invariants.Count == 0 ? "ok: every page accounted for exactly once" : "BROKEN")}");
            foreach (var i in invariants) o.WriteLine($"  {i}");
        }

        private static string Ns(long ns) => ns >= 1_000_000 ? $"{ns / 1e6:0.0} ms" : ns >= 1_000 ? $"{ns / 1e3:0.0} us" : $"{ns} ns";

        internal void WriteJson(string path)
        {
            using var stream = File.Create(path);
            using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteString("scenario", s.Scenario.Name);
            w.WriteNumber("threads", s.Threads);
            w.WriteNumber("seed", s.Seed);
            w.WriteString("sequence_hash", _hash.ToString("x16", CultureInfo.InvariantCulture));
            w.WriteNumber("elapsed_s", Math.Round(elapsed.TotalSeconds, 3));
            w.WriteNumber("operations", ops);
            w.WriteNumber("ops_per_s", Math.Round(ops / Math.Max(1e-9, elapsed.TotalSeconds), 1));
            for (int k = 0; k < _merged.Length; k++)
            {
                var h = _merged[k];
                if (h.Count == 0) continue;
                w.WriteNumber($"op.{OpNames[k]}.count", h.Count);
                w.WriteNumber($"op.{OpNames[k]}.p50_ns", h.Percentile(0.50));
                w.WriteNumber($"op.{OpNames[k]}.p99_ns", h.Percentile(0.99));
                w.WriteNumber($"op.{OpNames[k]}.max_ns", h.Max);
            }
            w.WriteNumber("pool.hit_ratio", Math.Round(HitRatio, 4));
            w.WriteNumber("pool.transition_pages", stats.Sum(x => x.TransitionPages));
            w.WriteNumber("pool.returned_pages", stats.Sum(x => x.ReturnedPages));
            w.WriteNumber("shrinker.scanned_pages", workers.Sum(x => x.ScannedPages));
            w.WriteNumber("zone_exhausted", workers.Sum(x => x.ZoneExhausted));
            w.WriteNumber("peak_rss_bytes", _peakRss);
            foreach (var (name, _, value) in s.Scenario.Report()) w.WriteNumber(name, value);
            w.WriteNumber("verify_failures", _verifyFailures);
            w.WriteNumber("invariant_violations", invariants.Count);
            w.WriteEndObject();
        }
    }
}
