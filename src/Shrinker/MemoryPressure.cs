namespace PagePool.Shrinker;

/// <summary>
/// How hard the system is pressed for memory, as a pressure source sees it. The reclaim thread turns a level
/// into a reclaim priority (the kernel's sc->priority): the higher the level, the larger the share of each
/// shrinker's freeable objects one pass asks for.
/// </summary>
public enum MemoryPressure
{
    /// <summary>No pressure: nothing to do.</summary>
    None = 0,
    /// <summary>Getting close: trim a little (a few percent of what each shrinker holds per pass).</summary>
    Low = 1,
    /// <summary>Pressed: give back a large share (a quarter per pass, more while it lasts).</summary>
    Medium = 2,
    /// <summary>About to fail or be OOM-killed: give back everything that can be given.</summary>
    Critical = 3,
}
