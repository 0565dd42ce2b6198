namespace PagePool.Shrinker;

/// <summary>
/// One way of learning that memory is short. A source either hands the reclaim thread a file descriptor to
/// wait on (a PSI trigger, a cgroup v1 threshold eventfd), so pressure wakes the thread at once, or is sampled
/// on the thread's tick; either way <see cref="Sample"/> says the level now. Every source is optional: a
/// machine without the kernel feature simply has no such source (see <see cref="PressureSources.Detect"/>).
/// </summary>
public abstract class PressureSource : IDisposable
{
    private int _fired;

    /// <summary>A short name ("psi", "cgroup", "memavailable", "gc").</summary>
    public abstract string Name { get; }

    /// <summary>How this source watches on this machine, in words (what `pagepool info` prints).</summary>
    public abstract string Mode { get; }

    /// <summary>The level now. Reading files, never blocking; cheap enough for every tick.</summary>
    public MemoryPressure Sample() => Evaluate(Interlocked.Exchange(ref _fired, 0) != 0);

    /// <summary>The level now; <paramref name="fired"/> is true when the wait descriptor fired since the last sample.</summary>
    private protected abstract MemoryPressure Evaluate(bool fired);

    /// <summary>A descriptor to poll(2) on, or -1 for a source that is only sampled.</summary>
    internal virtual int WaitFd => -1;

    /// <summary>The poll(2) events that mean "fired" (POLLPRI for PSI, POLLIN for an eventfd).</summary>
    internal virtual short WaitEvents => Native.Libc.POLLPRI;

    /// <summary>The descriptor reported events; <paramref name="revents"/> as poll(2) returned them.</summary>
    internal virtual void OnReady(short revents) => Volatile.Write(ref _fired, 1);

    /// <summary>Close what the source holds open.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Close descriptors.</summary>
    protected virtual void Dispose(bool disposing) { }

    /// <summary>Read a small kernel file whole; null when it is missing or unreadable.</summary>
    private protected static string? TryRead(string path)
    {
        try { return File.ReadAllText(path); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
