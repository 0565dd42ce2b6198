using PagePool.Shrinker.Native;

namespace PagePool.Shrinker;

/// <summary>
/// The one reclaim thread (the kswapd of this process): it sleeps in poll(2) on the descriptors its pressure
/// sources offer (PSI triggers, cgroup thresholds) and on its own eventfd, samples every source on each tick,
/// and while any reports pressure runs passes of the <see cref="ShrinkerRegistry"/>.
/// </summary>
/// <remarks>
/// <para>Priority: Low pressure runs passes at priority 6 (a shrinker is asked for 1/32 of what it holds, with the
/// default seeks), Medium at 3 (a quarter), Critical at 0 (everything). While pressure lasts, each further pass goes
/// one priority lower (bigger share), as the kernel lowers sc->priority when a round did not free enough.</para>
/// <para>Hysteresis: the sources have enter and leave thresholds; the thread keeps its escalation until
/// <see cref="CalmTicks"/> calm samples in a row, and a pass that freed nothing is followed by a full tick of
/// sleep rather than an immediate retry, so an empty registry under pressure does not spin.</para>
/// <para>Start and stop are explicit. <see cref="Stop"/> wakes the thread and waits for it; a pass in progress
/// completes first. A shrinker or a source that throws is reported to the registry's observer; the thread goes on.</para>
/// </remarks>
public sealed class ReclaimThread : IDisposable
{
    /// <summary>How often sources are sampled when nothing wakes the thread sooner.</summary>
    public static readonly TimeSpan DefaultTick = TimeSpan.FromMilliseconds(100);

    /// <summary>Calm samples in a row before the escalation is forgotten.</summary>
    public const int CalmTicks = 3;

    // Passes under pressure come this many times faster than the calm tick.
    private const int PressedTickDivisor = 10;

    private readonly ShrinkerRegistry _registry;
    private readonly PressureSource[] _sources;
    private readonly MemoryPressure[] _lastLevel;
    private readonly int _tickMs;
    private readonly Lock _lifecycle = new();
    private readonly int _wakeFd;
    private Thread? _thread;
    private int _stopping, _signalled, _escalation, _calm, _disposed;
    private long _passes, _freed;

    /// <summary>A reclaim thread for <paramref name="registry"/>; it owns <paramref name="sources"/> and disposes them.</summary>
    public ReclaimThread(ShrinkerRegistry registry, IEnumerable<PressureSource> sources, TimeSpan? tick = null)
    {
        ArgumentNullException.ThrowIfNull(registry);
        ArgumentNullException.ThrowIfNull(sources);
        _registry = registry;
        _sources = sources.ToArray();
        if (Array.IndexOf(_sources, null) is var at && at >= 0) // the thread would fail on it, and end the process
            throw new ArgumentNullException(nameof(sources), $"Pressure source {at} is null.");
        _lastLevel = new MemoryPressure[_sources.Length];
        var t = tick ?? DefaultTick;
        if (t < TimeSpan.FromMilliseconds(1) || t > TimeSpan.FromMinutes(1))
            throw new ArgumentOutOfRangeException(nameof(tick), t, "The tick must be 1 ms .. 1 min.");
        _tickMs = (int)t.TotalMilliseconds;
        // Open for the thread's whole life, so Signal never writes to a descriptor Stop may have closed.
        _wakeFd = Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (_wakeFd < 0)
            throw new InvalidOperationException($"eventfd for the reclaim thread failed: {Libc.ErrnoName(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}.");
    }

    /// <summary>The sources watched.</summary>
    public IReadOnlyList<PressureSource> Sources => _sources;

    /// <summary>True between <see cref="Start"/> and <see cref="Stop"/>.</summary>
    public bool IsRunning => Volatile.Read(ref _thread) is not null;

    /// <summary>Reclaim passes run so far.</summary>
    public long Passes => Volatile.Read(ref _passes);

    /// <summary>Objects freed by all passes so far.</summary>
    public long Freed => Volatile.Read(ref _freed);

    /// <summary>Start the thread. Throws <see cref="InvalidOperationException"/> when it is already running.</summary>
    public void Start()
    {
        lock (_lifecycle)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (_thread is not null) throw new InvalidOperationException("The reclaim thread is already running; stop it before starting it again.");
            Volatile.Write(ref _stopping, 0);
            var thread = new Thread(Loop) { Name = "pagepool-reclaim", IsBackground = true };
            thread.Start();
            Volatile.Write(ref _thread, thread);
        }
    }

    /// <summary>
    /// Stop the thread and wait for it (a pass in progress completes first). Does nothing when not running.
    /// Throws <see cref="InvalidOperationException"/> when called on the reclaim thread itself (from a shrinker or an
    /// observer), which cannot wait for its own end.
    /// </summary>
    public void Stop()
    {
        lock (_lifecycle)
        {
            var thread = _thread;
            if (thread is null) return;
            if (thread == Thread.CurrentThread)
                throw new InvalidOperationException("Stop or Dispose was called on the reclaim thread itself (from a shrinker or an observer during a pass), which cannot wait for itself to end; stop it from another thread.");
            Volatile.Write(ref _stopping, 1);
            Libc.Signal(_wakeFd);
            thread.Join();
            Volatile.Write(ref _thread, null);
        }
    }

    /// <summary>
    /// Report pressure from outside the sources (an allocation that failed, a test, a benchmark): the thread
    /// wakes at once and runs a pass at this level at least (or at its next start). Lock-free, so a shrinker may
    /// call it from inside a pass; it must not race with <see cref="Dispose"/>.
    /// </summary>
    public void Signal(MemoryPressure level)
    {
        int l = (int)level, seen;
        while (l > (seen = Volatile.Read(ref _signalled)) && Interlocked.CompareExchange(ref _signalled, l, seen) != seen) { }
        if (Volatile.Read(ref _disposed) == 0) Libc.Signal(_wakeFd);
    }

    /// <summary>Stop, then close the sources and the thread's eventfd.</summary>
    public void Dispose()
    {
        // Stop and mark disposed under one hold of the lock: a Start between the two would run a thread on a
        // closed eventfd that nothing stops.
        lock (_lifecycle)
        {
            Stop();
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            Libc.Close(_wakeFd);
        }
        foreach (var s in _sources) s.Dispose();
    }

    private unsafe void Loop()
    {
        var fds = new Libc.PollFd[1 + _sources.Length];
        int timeout = _tickMs;
        while (Volatile.Read(ref _stopping) == 0)
        {
            fds[0] = new Libc.PollFd { Fd = _wakeFd, Events = Libc.POLLIN };
            for (int i = 0; i < _sources.Length; i++)
                fds[i + 1] = new Libc.PollFd { Fd = _sources[i].WaitFd, Events = _sources[i].WaitEvents }; // fd -1: ignored by poll
            fixed (Libc.PollFd* p = fds)
                Libc.Poll(p, (nuint)fds.Length, timeout); // EINTR or a timeout: sample anyway
            if ((fds[0].Revents & Libc.POLLIN) != 0) Libc.Drain(_wakeFd);
            if (Volatile.Read(ref _stopping) != 0) break;
            for (int i = 0; i < _sources.Length; i++)
                if (fds[i + 1].Revents != 0) _sources[i].OnReady(fds[i + 1].Revents);

            var level = Sample();
            timeout = _tickMs;
            if (level == MemoryPressure.None)
            {
                if (++_calm >= CalmTicks) _escalation = 0;
                continue;
            }
            _calm = 0;
            int priority = Math.Max(0, BasePriority(level) - _escalation);
            long freed = _registry.Shrink(priority, level);
            Interlocked.Increment(ref _passes);
            Interlocked.Add(ref _freed, freed);
            if (freed > 0)
            {
                _escalation++;
                timeout = Math.Max(1, _tickMs / PressedTickDivisor);
            }
        }
    }

    private MemoryPressure Sample()
    {
        var level = (MemoryPressure)Interlocked.Exchange(ref _signalled, 0);
        for (int i = 0; i < _sources.Length; i++)
        {
            MemoryPressure l;
            try { l = _sources[i].Sample(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
            {
                _registry.Tell(o => o.ShrinkerFailed("source:" + _sources[i].Name, e));
                continue;
            }
            if (l != _lastLevel[i])
            {
                _lastLevel[i] = l;
                var name = _sources[i].Name;
                _registry.Tell(o => o.PressureChanged(name, l));
            }
            if (l > level) level = l;
        }
        return level;
    }

    /// <summary>The priority a pass starts at for a level (see the remarks).</summary>
    public static int BasePriority(MemoryPressure level) => level switch
    {
        MemoryPressure.Critical => 0,
        MemoryPressure.Medium => 3,
        MemoryPressure.Low => 6,
        _ => ShrinkerRegistry.DefaultPriority,
    };
}
