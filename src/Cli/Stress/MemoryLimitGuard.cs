using System.Globalization;
using PagePool.Shrinker;

namespace PagePool.Cli.Stress;

/// <summary>
/// Ends a stress run that cannot fit in its memory cgroup before the kernel's OOM killer does (with or without
/// --reclaim; without it, nothing frees the pool's pages, so they count as memory nothing can reclaim). Under --reclaim the
/// reclaim thread swaps buffers out and empties the pool from 75 % of the limit on (everything from 85 %); what it
/// cannot free is the memory nothing can reclaim: the pool buffers the workers hold, the process itself, shmem (a
/// memfd without system swap). When that reaches <see cref="GiveUpAt"/> of the limit, the run does not fit: the
/// guard stops the workers, and the runner releases, verifies and exits 3 with the figures (not a SIGKILL, exit 137).
/// </summary>
/// <remarks>
/// The guard has its own thread that reads the cgroup's usage every <see cref="Interval"/>: the reclaim thread's
/// tick (100 ms, 10 ms while pressed) is too coarse for a last line, and a pass in progress (swap writes) must not
/// delay it. Usage counts page cache too, which the kernel drops at the limit before it kills anyone, so the guard
/// subtracts the file LRU pages (memory.stat active_file + inactive_file) before it judges.
/// </remarks>
internal sealed class MemoryLimitGuard : IDisposable
{
    /// <summary>
    /// Unreclaimable usage over the limit that ends the run: above the reclaim thread's Critical threshold (85 %),
    /// so reclaim has been asked for everything; 8 % below the limit, the room the workers' steps in flight need to
    /// finish after the stop (4 threads x a 2 MiB buffer = 8 MiB, 6 % of a 128 MiB limit) before they let go.
    /// </summary>
    internal const double GiveUpAt = 0.92;

    /// <summary>How often usage is read: 2 MiB allocations at memset speed (~35 GB/s) fill 8 % of 128 MiB in well over 5 ms.</summary>
    internal static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(5);

    private readonly CgroupPressureSource _cgroup;
    private readonly long _limit;
    private readonly string _statPath;
    private readonly Action _stop;
    private readonly string _holding;
    private readonly bool _reclaiming;
    private readonly bool _ownsCgroup; // the source was opened for the guard alone (no reclaim thread)
    private readonly Thread _thread;
    private volatile bool _disposed;

    /// <summary>
    /// Watch <paramref name="cgroup"/> (which has a limit); call <paramref name="stop"/> once when the run does not
    /// fit. <paramref name="holding"/> says what the run holds that nothing can swap, for the message.
    /// </summary>
    private MemoryLimitGuard(CgroupPressureSource cgroup, long limit, Action stop, string holding, bool reclaiming, bool ownsCgroup)
    {
        (_cgroup, _limit, _stop, _holding, _reclaiming, _ownsCgroup) = (cgroup, limit, stop, holding, reclaiming, ownsCgroup);
        _statPath = Path.Combine(cgroup.Directory, "memory.stat");
        _thread = new Thread(Watch) { Name = "pagepool-memory-guard", IsBackground = true };
        _thread.Start();
    }

    /// <summary>A guard on the cgroup source among <paramref name="sources"/> (the reclaim thread's), or null when none has a limit.</summary>
    internal static MemoryLimitGuard? Start(IEnumerable<PressureSource> sources, Action stop, string holding)
    {
        var cgroup = sources.OfType<CgroupPressureSource>().FirstOrDefault();
        return cgroup?.LimitBytes is { } limit ? new MemoryLimitGuard(cgroup, limit, stop, holding, reclaiming: true, ownsCgroup: false) : null;
    }

    /// <summary>
    /// A guard for a run without the reclaim thread, on a cgroup source of its own, or null outside a memory cgroup
    /// with a limit. Nothing frees the pool's pages then, so everything the run holds counts as unreclaimable.
    /// </summary>
    internal static MemoryLimitGuard? StartWithoutReclaim(Action stop, string holding)
    {
        CgroupPressureSource? cgroup = null;
        foreach (var source in PressureSources.Detect())
        {
            if (cgroup is null && source is CgroupPressureSource c && c.LimitBytes is not null) cgroup = c;
            else source.Dispose();
        }
        return cgroup is null ? null : new MemoryLimitGuard(cgroup, cgroup.LimitBytes!.Value, stop, holding, reclaiming: false, ownsCgroup: true);
    }

    /// <summary>The limit watched.</summary>
    internal long LimitBytes => _limit;

    /// <summary>Why the run was ended, or null while it fits (written before the stop, read after the workers joined).</summary>
    internal string? Verdict { get; private set; }

    private void Watch()
    {
        long giveUp = (long)(_limit * GiveUpAt);
        while (!_disposed)
        {
            // Usage is an upper bound of the unreclaimable part: memory.stat is read only near the line.
            if (_cgroup.UsageBytes is { } usage && usage >= giveUp && usage - FileCacheBytes() is var hard && hard >= giveUp)
            {
                string percent = (100.0 * hard / _limit).ToString("0", CultureInfo.InvariantCulture);
                Verdict = _reclaiming
                    ? $"the memory cgroup's limit is {Size.Format(_limit)} and {Size.Format(hard)} ({percent} %) of it is memory " +
                      $"the kernel cannot reclaim (no swap), with the reclaim thread asked for everything since {CgroupPressureSource.CriticalAt:P0}: this run holds {_holding}, which " +
                      "cannot be swapped; stopped before the kernel's OOM killer would act. Lower --working-set or raise the limit."
                    : $"the memory cgroup's limit is {Size.Format(_limit)} and {Size.Format(hard)} ({percent} %) of it is memory " +
                      $"the kernel cannot reclaim (no swap); without --reclaim nothing gives the pool's pages back under pressure (this run holds {_holding}); " +
                      "stopped before the kernel's OOM killer would act. Pass --reclaim, lower --working-set or --pool-limit, or raise the limit.";
                _stop();
                return;
            }
            Thread.Sleep(Interval);
        }
    }

    // Page cache on the file LRUs: the kernel drops it at the limit before it kills (v1 hierarchical totals first).
    private long FileCacheBytes()
    {
        long active = 0, inactive = 0;
        try
        {
            foreach (var line in File.ReadLines(_statPath))
            {
                int space = line.IndexOf(' ');
                if (space < 0) continue;
                var key = line.AsSpan(0, space);
                if (!long.TryParse(line.AsSpan(space + 1), NumberStyles.None, CultureInfo.InvariantCulture, out long v)) continue;
                if (key is "total_active_file" or "active_file") active = v;
                else if (key is "total_inactive_file" or "inactive_file") inactive = v;
            }
        }
        catch (IOException) { return 0; } // unreadable: judge by usage alone (the cautious side)
        return active + inactive;
    }

    /// <summary>Stop watching and wait for the thread.</summary>
    public void Dispose()
    {
        _disposed = true;
        _thread.Join();
        if (_ownsCgroup) _cgroup.Dispose();
    }
}
