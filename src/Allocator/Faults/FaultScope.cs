namespace PagePool.Faults;

/// <summary>Which calls an armed fault applies to.</summary>
public enum FaultScope
{
    /// <summary>Only calls made by the thread that armed it (tests running in parallel stay apart).</summary>
    CurrentThread,
    /// <summary>Calls made by any thread (what the environment variable arms).</summary>
    Process,
}
