using PagePool.Shrinker.Native;

namespace PagePool.Shrinker;

/// <summary>
/// The memory cgroup's usage against its limit: v1 <c>memory.usage_in_bytes</c> / <c>memory.limit_in_bytes</c>,
/// v2 <c>memory.current</c> against the lower of <c>memory.high</c> and <c>memory.max</c>. Reclaiming before usage
/// reaches the limit is what keeps the kernel's OOM killer away: a memfd page is shmem, which the cgroup cannot
/// reclaim without swap. On v1 an eventfd threshold on usage is registered through <c>cgroup.event_control</c>
/// (Documentation/admin-guide/cgroup-v1/memory.rst, "Memory thresholds"), so crossing it wakes the reclaim thread
/// at once; otherwise usage is read on each tick.
/// </summary>
/// <remarks>
/// Levels, as a fraction of the limit, with hysteresis so reclaim does not flap at one boundary: Low from 75 %
/// (and until usage falls below 70 %), Medium from 80 %, Critical from 85 %. The kernel's OOM killer acts at 100 %
/// with no warning and memfd pages cannot be swapped, so the last 15 % is the room a burst of allocation gets
/// between two reclaim ticks (100 ms): measured with `stress churn` in a 190 MiB cgroup, 95 % left too little.
/// </remarks>
public sealed class CgroupPressureSource : PressureSource
{
    /// <summary>Usage over limit at which reclaim starts.</summary>
    public const double LowEnter = 0.75;
    /// <summary>Usage over limit below which reclaim stops again.</summary>
    public const double LowLeave = 0.70;
    /// <summary>Usage over limit that asks for a large share.</summary>
    public const double MediumAt = 0.80;
    /// <summary>Usage over limit that asks for everything.</summary>
    public const double CriticalAt = 0.85;

    private readonly string _usagePath;
    private readonly string[] _limitPaths;
    private readonly string _mode;
    private int _eventFd = -1, _usageFd = -1;
    private MemoryPressure _level;

    /// <summary>
    /// Watch the cgroup whose files live in <paramref name="directory"/>; <paramref name="version"/> is 1 or 2.
    /// Throws <see cref="ArgumentException"/> when the directory has no memory controller files.
    /// </summary>
    public CgroupPressureSource(string directory, int version)
    {
        if (version is not (1 or 2))
            throw new ArgumentOutOfRangeException(nameof(version), version, "A cgroup version is 1 or 2.");
        Directory = directory;
        Version = version;
        _usagePath = Path.Combine(directory, version == 1 ? "memory.usage_in_bytes" : "memory.current");
        _limitPaths = version == 1
            ? [Path.Combine(directory, "memory.limit_in_bytes")]
            : [Path.Combine(directory, "memory.high"), Path.Combine(directory, "memory.max")];
        if (!File.Exists(_usagePath))
            throw new ArgumentException($"{directory} has no {Path.GetFileName(_usagePath)}: not a cgroup v{version} memory controller directory.", nameof(directory));
        string how = $"usage against limit in {directory} (v{version})";
        _mode = version == 1 ? how + ", " + RegisterThreshold() : how + ", read on each tick";
    }

    /// <summary>The cgroup directory watched.</summary>
    public string Directory { get; }

    /// <summary>1 or 2.</summary>
    public int Version { get; }

    /// <inheritdoc/>
    public override string Name => "cgroup";

    /// <inheritdoc/>
    public override string Mode => _mode;

    /// <summary>Bytes charged to the cgroup now; null when unreadable.</summary>
    public long? UsageBytes => ReadBytes(_usagePath);

    /// <summary>The effective limit in bytes (v2: the lower of memory.high and memory.max); null for none.</summary>
    public long? LimitBytes
    {
        get
        {
            long? limit = null;
            foreach (var p in _limitPaths)
                if (ReadBytes(p) is { } v && (limit is null || v < limit)) limit = v;
            return limit;
        }
    }

    /// <summary>True when a v1 threshold eventfd wakes the reclaim thread.</summary>
    public bool ThresholdRegistered => _eventFd >= 0;

    internal override int WaitFd => _eventFd;
    internal override short WaitEvents => Libc.POLLIN;

    internal override void OnReady(short revents)
    {
        Libc.Drain(_eventFd);
        base.OnReady(revents);
    }

    private protected override MemoryPressure Evaluate(bool fired)
    {
        if (UsageBytes is not { } usage || LimitBytes is not { } limit || limit <= 0) return _level = MemoryPressure.None;
        double ratio = (double)usage / limit;
        return _level = ratio switch
        {
            >= CriticalAt => MemoryPressure.Critical,
            >= MediumAt => MemoryPressure.Medium,
            >= LowEnter => MemoryPressure.Low,
            >= LowLeave when _level != MemoryPressure.None => MemoryPressure.Low,
            _ => MemoryPressure.None,
        };
    }

    // v1: "<eventfd> <fd of memory.usage_in_bytes> <threshold>" into cgroup.event_control; the eventfd is
    // signalled whenever usage crosses the threshold, in either direction.
    private string RegisterThreshold()
    {
        if (LimitBytes is not { } limit) return "no limit set: read on each tick";
        long threshold = (long)(limit * LowLeave);
        string control = Path.Combine(Directory, "cgroup.event_control");
        int efd = Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (efd < 0) return $"read on each tick (eventfd failed: {Libc.ErrnoName(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())})";
        int ufd = Libc.Open(_usagePath, Libc.O_RDONLY | Libc.O_CLOEXEC);
        int cfd = ufd < 0 ? -1 : Libc.Open(control, Libc.O_WRONLY | Libc.O_CLOEXEC);
        int errno = cfd < 0 ? System.Runtime.InteropServices.Marshal.GetLastPInvokeError() : 0;
        bool ok = cfd >= 0 && Libc.WriteString(cfd, $"{efd} {ufd} {threshold}", nul: false, out errno);
        if (cfd >= 0) Libc.Close(cfd);
        if (!ok)
        {
            if (ufd >= 0) Libc.Close(ufd);
            Libc.Close(efd);
            return $"read on each tick (threshold refused by {control}: {Libc.ErrnoName(errno)})";
        }
        _eventFd = efd;
        _usageFd = ufd; // the kernel ties the threshold to this descriptor: keep it open while we listen
        return $"eventfd threshold at {threshold:N0} bytes via cgroup.event_control";
    }

    private static long? ReadBytes(string path)
    {
        var text = TryRead(path)?.Trim();
        if (text is null || text == "max" || !long.TryParse(text, out long v)) return null;
        return v >= long.MaxValue / 2 ? null : v; // v1 reports "unlimited" as a page-rounded LONG_MAX
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        int efd = Interlocked.Exchange(ref _eventFd, -1), ufd = Interlocked.Exchange(ref _usageFd, -1);
        if (efd >= 0) Libc.Close(efd);
        if (ufd >= 0) Libc.Close(ufd);
    }
}
