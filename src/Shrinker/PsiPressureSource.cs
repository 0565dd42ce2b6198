using System.Globalization;
using PagePool.Shrinker.Native;

namespace PagePool.Shrinker;

/// <summary>
/// Pressure stall information (Documentation/accounting/psi.rst): a trigger such as <c>some 150000 1000000</c>
/// (150 ms of stall within a 1 s window) written to <c>/proc/pressure/memory</c> or a cgroup v2
/// <c>memory.pressure</c>, then poll(2) for POLLPRI, as the kernel documents: the thread sleeps until the
/// kernel says memory stalls, no file is polled in a loop. Where the trigger cannot be registered
/// (permissions, an old kernel, a file that is not a PSI file), the source falls back to reading the averages
/// on each tick and says so in <see cref="Mode"/>.
/// </summary>
public sealed class PsiPressureSource : PressureSource
{
    /// <summary>Stall that fires the trigger, in microseconds (150 ms, the kernel documentation's example).</summary>
    public const int DefaultStallUs = 150_000;

    /// <summary>The trigger window in microseconds. 2 s: unprivileged triggers need a multiple of 2 s.</summary>
    public const int DefaultWindowUs = 2_000_000;

    // Averaged-mode thresholds on "some avg10" (percent of wall time stalled), with hysteresis: enter Low at 1 %,
    // leave below 0.5 %; 10 % is Medium, 40 % Critical (a process that stalls that much is close to thrashing).
    private const double LowEnter = 1.0, LowLeave = 0.5, MediumAt = 10.0, CriticalAt = 40.0;

    private readonly string _path;
    private readonly string _mode;
    private int _fd = -1;
    private MemoryPressure _averaged;

    /// <summary>
    /// Watch <paramref name="path"/>: register a trigger of <paramref name="stallUs"/> in <paramref name="windowUs"/>
    /// and wait for it, or fall back to the averages when the kernel refuses.
    /// </summary>
    public PsiPressureSource(string path = "/proc/pressure/memory", int stallUs = DefaultStallUs, int windowUs = DefaultWindowUs)
    {
        _path = path;
        string trigger = $"some {stallUs} {windowUs}";
        int fd = Libc.Open(path, Libc.O_RDWR | Libc.O_NONBLOCK | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            _mode = $"averages of {path} (cannot open it for a trigger: {Libc.ErrnoName(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())})";
            return;
        }
        if (!Libc.WriteString(fd, trigger, nul: true, out int errno))
        {
            Libc.Close(fd);
            _mode = $"averages of {path} (trigger '{trigger}' refused: {Libc.ErrnoName(errno)})";
            return;
        }
        if (Libc.FileSystemType(fd) is not (Libc.PROC_SUPER_MAGIC or Libc.CGROUP2_SUPER_MAGIC))
        {
            // PSI files live in procfs or cgroup2: anywhere else the write "succeeded" into a plain file.
            Libc.Close(fd);
            _mode = $"averages of {path} (not a PSI file: a trigger cannot be registered there)";
            return;
        }
        _fd = fd;
        _mode = $"trigger '{trigger}' on {path}, poll(2) POLLPRI";
    }

    /// <summary>True when a trigger is registered and waited on; false in the averages fallback.</summary>
    public bool TriggerRegistered => _fd >= 0;

    /// <inheritdoc/>
    public override string Name => "psi";

    /// <inheritdoc/>
    public override string Mode => _mode;

    internal override int WaitFd => _fd;

    internal override void OnReady(short revents)
    {
        if ((revents & (Libc.POLLERR | Libc.POLLNVAL)) != 0)
        {
            // The file went away (a cgroup removed): stop waiting on it, keep reading what averages there are.
            int fd = Interlocked.Exchange(ref _fd, -1);
            if (fd >= 0) Libc.Close(fd);
            return;
        }
        base.OnReady(revents);
    }

    private protected override MemoryPressure Evaluate(bool fired)
    {
        double? avg10 = SomeAvg10(TryRead(_path));
        var level = avg10 switch
        {
            null => MemoryPressure.None,
            >= CriticalAt => MemoryPressure.Critical,
            >= MediumAt => MemoryPressure.Medium,
            >= LowEnter => MemoryPressure.Low,
            >= LowLeave when _averaged != MemoryPressure.None => MemoryPressure.Low,
            _ => MemoryPressure.None,
        };
        _averaged = level;
        // A fired trigger means a stall of 150 ms within the window just happened: at least Medium.
        return fired && level < MemoryPressure.Medium ? MemoryPressure.Medium : level;
    }

    internal static double? SomeAvg10(string? text)
    {
        if (text is null) return null;
        foreach (var line in text.Split('\n'))
        {
            if (!line.StartsWith("some ", StringComparison.Ordinal)) continue;
            foreach (var item in line.Split(' '))
                if (item.StartsWith("avg10=", StringComparison.Ordinal)
                    && double.TryParse(item.AsSpan(6), NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
                    return v;
        }
        return null;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0) Libc.Close(fd);
    }
}
