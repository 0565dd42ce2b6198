using PagePool.Shrinker;
using PagePool.Pool;

namespace PagePool.Cli.Stress;

/// <summary>
/// A stress scenario: one step of work a worker repeats until the run ends. Adding a scenario is a subclass and a
/// line in <see cref="All"/>; the runner brings threads, timing, progress, verification and the summary.
/// </summary>
internal abstract class StressScenario
{
    internal abstract string Name { get; }
    internal abstract string Description { get; }

    /// <summary>
    /// The pool limit when --pool-limit is not given (read once, where the command is resolved): half of RAM,
    /// unless the scenario needs the pool smaller than the working set.
    /// </summary>
    internal virtual long DefaultPoolLimit(long workingSetBytes, long physicalMemoryBytes) => physicalMemoryBytes / 2;

    /// <summary>
    /// The part of the working set held in pool buffers (the workers' own, which nothing can swap): all of it,
    /// unless the scenario holds part of it elsewhere (mixed keeps most in swappable buffers).
    /// </summary>
    internal virtual long PoolShareBytes(long workingSetBytes) => workingSetBytes;

    /// <summary>One step on one worker.</summary>
    internal abstract void Step(StressWorker w);

    /// <summary>--inject-corruption: flip one byte behind the library's back, where the scenario's checks must see it (a held buffer).</summary>
    internal virtual void InjectCorruption(StressWorker w) => w.InjectCorruption();

    /// <summary>Set up state the scenario keeps beside the workers' buffers, once the pool exists.</summary>
    internal virtual void Start(PoolAllocator pool, StressSettings settings, ShrinkerRegistry? shrinkers) { }

    /// <summary>After the workers released their buffers, before the invariants: give back what the scenario holds; return what is broken.</summary>
    internal virtual IEnumerable<string> Finish() => [];

    /// <summary>Summary lines of the scenario's own (name for the JSON, text, value).</summary>
    internal virtual IEnumerable<(string Name, string Text, double Value)> Report() => [];

    internal static readonly StressScenario[] All =
    [
        new AllocScenario(),
        new CachingScenario(),
        new ChurnScenario(),
        new MixedScenario(),
        new DmaScenario(),
        new SwapScenario(),
    ];
}

/// <summary>Random sizes and orders, bulk and single pages, in every caching mode, up to the working set.</summary>
internal sealed class AllocScenario : StressScenario
{
    internal override string Name => "alloc";
    internal override string Description => "random sizes and orders, bulk and single pages, many threads";

    internal override void Step(StressWorker w)
    {
        if ((w.LiveCount == 0 || w.Next(3) != 0) && w.TryAllocateWithinShare()) return;
        w.ReleaseRandom();
    }
}

/// <summary>Live buffers switched between caching modes, with the pool now warm, now cold (shrunk to nothing).</summary>
internal sealed class CachingScenario : StressScenario
{
    internal override string Name => "caching";
    internal override string Description => "live buffers switched between modes, the pool kept warm and cold";

    internal override void Step(StressWorker w)
    {
        int r = w.Next(64);
        if (r == 0 && w.Next(4) == 0) w.Scan(long.MaxValue);     // now and then cold: every pooled page back to the system
        else if (r < 24 && w.LiveCount > 0) w.SwitchRandom();
        else if (r < 48 && w.TryAllocateWithinShare()) { }
        else w.ReleaseRandom();
    }
}

/// <summary>A working set larger than the pool limit: pages keep leaving for the system and coming back.</summary>
internal sealed class ChurnScenario : StressScenario
{
    internal override string Name => "churn";
    internal override string Description => "working set larger than the pool limit, pages leave and return";

    internal override long DefaultPoolLimit(long workingSetBytes, long physicalMemoryBytes) => workingSetBytes / 4;

    internal override void Step(StressWorker w)
    {
        if (w.TryAllocateWithinShare()) return;
        int held = w.LiveCount;
        w.TrimToShare(w.ShareBytes / 2); // give half the share back at once: far more than the pool keeps
        if (w.LiveCount == held) w.ReleaseRandom(); // at most half held, and still no room for the buffer: one step of progress
    }
}
