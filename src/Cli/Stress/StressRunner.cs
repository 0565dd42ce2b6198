using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using PagePool.Diagnostics;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Shrinker;

namespace PagePool.Cli.Stress;

/// <summary>
/// Runs a scenario on N threads until the duration or the operation count is reached, shows progress, then
/// releases everything, checks the invariants (every page accounted for exactly once), prints the summary and
/// returns the exit code: 1 when verification failed or an invariant broke, 3 when memory or threads ran out.
/// </summary>
internal static class StressRunner
{
    /// <summary>The version of the JSON summary's layout; raised whenever a key changes meaning or goes away.</summary>
    internal const int SchemaVersion = 1;

    internal static int Run(StressSettings s, TextWriter stdout, TextWriter stderr)
    {
        // Results that go to standard output push the human summary to standard error.
        var human = s.JsonPath == OutputFile.StandardOutput || s.SamplesPath == OutputFile.StandardOutput ? stderr : stdout;
        using var memory = new PhysicalMemory(new MemoryOptions
        {
            Dma32Bytes = Math.Min(2L << 30, Math.Max(64L << 20, s.WorkingSetBytes)),
        });
        var reclaimTotals = s.Reclaim ? new ReclaimTotals() : null;
        var shrinkers = s.Reclaim ? new ShrinkerRegistry { Observer = reclaimTotals } : null;
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = s.PoolLimitBytes }, shrinkers);
        using var reclaim = shrinkers is null ? null : new ReclaimThread(shrinkers, PressureSources.Detect());
        if (reclaim is not null)
        {
            foreach (var source in reclaim.Sources) stderr.WriteLine($"reclaim: {source.Name}: {source.Mode}");
            reclaim.Start();
        }
        var workers = new StressWorker[s.Threads];
        for (int i = 0; i < workers.Length; i++) workers[i] = new StressWorker(i, pool, s);
        s.Scenario.Start(pool, s, shrinkers);

        stderr.WriteLine($"stress {s.Scenario.Name}: {s.Threads} threads, {Describe(s)}, working set {Size.Format(s.WorkingSetBytes)}, " +
                         $"pool limit {Size.Format(s.PoolLimitBytes)}, seed {s.Seed}{(s.Verify ? ", verifying" : "")}");
        using var samples = s.SamplesPath is null ? null : OutputFile.Create(s.SamplesPath, stdout);
        var clock = Stopwatch.StartNew();
        int stop = 0;
        // In a memory cgroup with a limit: a run that cannot fit ends with exit 3 before the OOM killer acts.
        string holding = $"up to {Size.Format(s.Scenario.PoolShareBytes(s.WorkingSetBytes))} in pool buffers";
        using var guard = reclaim is not null
            ? MemoryLimitGuard.Start(reclaim.Sources, () => Volatile.Write(ref stop, 1), holding)
            : MemoryLimitGuard.StartWithoutReclaim(() => Volatile.Write(ref stop, 1), holding + $" and whatever the pool keeps, up to its {Size.Format(s.PoolLimitBytes)} limit");
        if (guard is not null)
            stderr.WriteLine($"{(reclaim is null ? "stress" : "reclaim")}: guard: the run ends (exit {ExitCodes.ResourceExhausted}) if memory nothing can reclaim reaches {MemoryLimitGuard.GiveUpAt:P0} of the cgroup's {Size.Format(guard.LimitBytes)} limit");
        var errors = new ConcurrentQueue<Exception>();
        var threads = new List<Thread>();
        try
        {
            long perThread = s.Operations is { } total ? total / s.Threads : long.MaxValue;
            for (int i = 0; i < workers.Length; i++)
            {
                var w = workers[i];
                w.Budget = s.Operations is { } t ? perThread + (i < t % s.Threads ? 1 : 0) : long.MaxValue;
                var thread = new Thread(() =>
                {
                    try
                    {
                        while (w.Operations < w.Budget && Volatile.Read(ref stop) == 0)
                        {
                            s.Scenario.Step(w);
                            if (s.InjectCorruption && w.Index == 0 && w.Operations >= 32 && !w.Injected) s.Scenario.InjectCorruption(w);
                        }
                    }
                    catch (Exception e) when (e is PagePoolException or InvalidOperationException or OutOfMemoryException)
                    {
                        errors.Enqueue(e);
                        Volatile.Write(ref stop, 1);
                    }
                }) { Name = $"stress-{i}", IsBackground = true };
                thread.Start(); // OutOfMemoryException when the process may not have another thread
                threads.Add(thread);
            }

            var progress = new Progress(pool, s, workers, clock, stderr, samples);
            while (!threads.All(t => t.Join(Progress.Interval)))
            {
                if (s.Duration is { } d && clock.Elapsed >= d) Volatile.Write(ref stop, 1);
                progress.Report();
            }
            progress.Done();
        }
        catch (OutOfMemoryException e)
        {
            errors.Enqueue(e);
        }
        finally
        {
            // Every path out stops and joins the workers, so their buffers can be given back below.
            Volatile.Write(ref stop, 1);
            foreach (var t in threads) t.Join();
        }
        var elapsed = clock.Elapsed;
        reclaim?.Stop();
        if (reclaim is not null) stderr.WriteLine($"reclaim: {reclaim.Passes:N0} passes freed {reclaim.Freed:N0} pages");

        // Give everything back (checked), then every page must be pooled or free: none lost, none twice.
        long ops = workers.Sum(w => w.Operations);
        foreach (var w in workers) w.Finish();
        var scenarioBroken = s.Scenario.Finish().ToList();
        var invariants = CheckInvariants(pool, memory);
        invariants.AddRange(scenarioBroken);
        var exhausted = errors.Where(ExitCodes.IsResourceExhaustion).Select(e => $"{e.GetType().Name}: {e.Message}").ToList();
        if (guard?.Verdict is { } verdict) exhausted.Insert(0, verdict);
        foreach (var e in errors.Where(e => !ExitCodes.IsResourceExhaustion(e))) invariants.Add($"{e.GetType().Name}: {e.Message}");

        var summary = new StressSummary(s, workers, pool.Statistics(), elapsed, ops, invariants, exhausted)
        {
            Reclaim = reclaim is null ? null : (reclaim.Passes, reclaim.Freed, reclaimTotals!),
        };
        summary.Print(human);
        samples?.Commit();
        if (s.JsonPath is not null)
        {
            using var json = OutputFile.Create(s.JsonPath, stdout);
            summary.WriteJson(json.Stream);
            json.Commit();
        }
        if (invariants.Count > 0 || summary.VerifyFailures > 0)
        {
            stderr.WriteLine(summary.VerifyFailures > 0
                ? $"pagepool: stress: verification failed {summary.VerifyFailures:N0} time{(summary.VerifyFailures == 1 ? "" : "s")}{(invariants.Count > 0 ? $", and {invariants.Count} invariant{(invariants.Count == 1 ? "" : "s")} broke" : "")} (see the summary)"
                : $"pagepool: stress: {invariants.Count} invariant{(invariants.Count == 1 ? "" : "s")} broke; the first: {Program.OneLine(invariants[0])}");
            return ExitCodes.Failed;
        }
        if (exhausted.Count > 0)
        {
            stderr.WriteLine($"pagepool: stress: out of resources: {exhausted[0]}");
            return ExitCodes.ResourceExhausted;
        }
        return ExitCodes.Ok;
    }

    private static string Describe(StressSettings s)
        => s.Operations is { } n ? $"{n:N0} operations" : Duration.Format(s.Duration!.Value);

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

    /// <summary>
    /// A live line on a terminal (stderr), plain lines each second otherwise; with --samples, one CSV row per
    /// second: what the line shows, for plotting.
    /// </summary>
    private sealed class Progress
    {
        internal static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(250);
        private static readonly TimeSpan SampleEvery = TimeSpan.FromSeconds(1);

        private readonly PoolAllocator _pool;
        private readonly StressSettings _s;
        private readonly StressWorker[] _workers;
        private readonly Stopwatch _clock;
        private readonly TextWriter _err;
        private readonly StreamWriter? _samples;
        private readonly bool _tty = !Console.IsErrorRedirected;
        private TimeSpan _lastAt;
        private long _lastOps, _lastHits, _lastMisses;

        internal Progress(PoolAllocator pool, StressSettings s, StressWorker[] workers, Stopwatch clock, TextWriter err, OutputFile? samples)
        {
            (_pool, _s, _workers, _clock, _err) = (pool, s, workers, clock, err);
            _tty &= ReferenceEquals(err, Console.Error);
            if (samples is not null)
            {
                _samples = new StreamWriter(samples.Stream, new UTF8Encoding(false), leaveOpen: true) { NewLine = "\n" };
                _samples.WriteLine("elapsed_s,operations,ops_per_s,pooled_bytes,pool_limit_bytes,rss_bytes,hits,misses,interval_hit_ratio");
            }
        }

        internal void Report(bool final = false)
        {
            var now = _clock.Elapsed;
            bool sample = final || now - _lastAt >= SampleEvery;
            if (!sample && !_tty) return;
            long ops = 0;
            foreach (var w in _workers) ops += Volatile.Read(ref w.Operations);
            var stats = _pool.Statistics();
            long hits = stats.Sum(x => x.Hits), misses = stats.Sum(x => x.Misses);
            double seconds = Math.Max(1e-9, (now - _lastAt).TotalSeconds);
            double rate = (ops - _lastOps) / seconds;
            long dh = hits - _lastHits, dm = misses - _lastMisses;
            double ratio = dh + dm == 0 ? 0 : (double)dh / (dh + dm);
            long pooled = _pool.Count() * PhysicalMemory.PageSize, rss = SystemInfo.ResidentBytes();
            string line = string.Create(CultureInfo.InvariantCulture,
                $"{now.TotalSeconds,6:0.0} s  {ops,13:N0} ops  {rate,11:N0} ops/s  pooled {Size.Format(pooled),10} of {Size.Format(_s.PoolLimitBytes)}  " +
                $"rss {Size.Format(rss),10}  hits {100 * ratio,5:0.0}% this interval");
            if (_tty) _err.Write("\r" + line + "  ");
            else _err.WriteLine(line);
            if (!sample) return;
            _samples?.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{now.TotalSeconds:0.000},{ops},{rate:0},{pooled},{_s.PoolLimitBytes},{rss},{hits},{misses},{ratio:0.0000}"));
            (_lastAt, _lastOps, _lastHits, _lastMisses) = (now, ops, hits, misses);
        }

        internal void Done()
        {
            Report(final: true);
            _samples?.Flush();
            if (_tty) _err.WriteLine();
        }
    }
}
