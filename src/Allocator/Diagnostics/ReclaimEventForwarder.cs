using PagePool.Shrinker;

namespace PagePool.Diagnostics;

/// <summary>
/// Forwards what the reclaim machinery reports (a <see cref="ShrinkerRegistry"/> and its <see cref="ReclaimThread"/>,
/// which know nothing of this library) into the PagePool event stream, keyword Shrinker (events 41-44), and into the
/// Meter's reclaim instruments (<c>pagepool.reclaim.*</c>, <c>pagepool.pressure.level</c>). Set it as the registry's
/// <see cref="ShrinkerRegistry.Observer"/>.
/// </summary>
public sealed class ReclaimEventForwarder : IReclaimObserver
{
    /// <summary>The one instance (it holds no state).</summary>
    public static readonly ReclaimEventForwarder Instance = new();

    private ReclaimEventForwarder() => PagePoolEventSource.EnsureCreated();

    /// <inheritdoc/>
    public void PressureChanged(string source, MemoryPressure level)
    {
        ReclaimTally.Level(source, (int)level);
        if (PagePoolEventSource.ShrinkerOn) PagePoolEventSource.Log.PressureChanged(source, (int)level);
    }

    /// <inheritdoc/>
    public void ReclaimPass(MemoryPressure level, int priority, long freed, long nanoseconds)
    {
        ReclaimTally.Pass();
        if (PagePoolEventSource.ShrinkerOn) PagePoolEventSource.Log.ReclaimPass((int)level, priority, freed, nanoseconds);
    }

    /// <inheritdoc/>
    public void ShrinkerScanned(string shrinker, long asked, long freed)
    {
        ReclaimTally.Scanned(shrinker, asked, freed);
        if (PagePoolEventSource.ShrinkerOn) PagePoolEventSource.Log.ShrinkerPassScanned(shrinker, asked, freed);
    }

    /// <inheritdoc/>
    public void ShrinkerFailed(string shrinker, Exception error)
    {
        if (PagePoolEventSource.ShrinkerOn) PagePoolEventSource.Log.ShrinkerFailed(shrinker, $"{error.GetType().Name}: {error.Message}");
    }
}
