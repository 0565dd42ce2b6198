using PagePool.Pool;
using PagePool.Shrinker;

namespace PagePool.Cli.Stress;

/// <summary>
/// All of the scenarios at once, each step chosen at random, with the working set split the way a driver's memory
/// is: most of it in buffers (TTs) that can be swapped to the file store, a small part in pool buffers the workers
/// hold, which nothing can swap.
/// </summary>
/// <remarks>
/// The split is what lets mixed run in a memory cgroup whose limit is half its working set. Under --reclaim the
/// buffers' LRU is a shrinker: near the cgroup limit the reclaim thread swaps idle buffers out and empties the pool,
/// and what stays resident is the pool share (<see cref="PoolShareDivisor"/>), the pooled pages and the process
/// itself. Were the pool share the whole working set (as in alloc, caching and churn), no reclaim could bring the
/// run under half of it: that run does not fit, and the stress runner ends it with exit 3 before the kernel's OOM
/// killer does (see <see cref="MemoryLimitGuard"/>).
/// </remarks>
internal sealed class MixedScenario : StressScenario
{
    /// <summary>
    /// One sixteenth of the working set in pool buffers: in a cgroup of half the working set that is an eighth of the
    /// limit, which leaves room for the process (about 30 MiB of anonymous memory under the JIT), the DMA machine, the
    /// pooled pages and the buffers resident up to their limit between two reclaim passes. With an eighth, runs under
    /// the JIT in a 128 MiB cgroup peaked at 111-118 MiB, too close to where <see cref="MemoryLimitGuard"/> stops a run.
    /// </summary>
    internal const int PoolShareDivisor = 16;

    private readonly StressScenario[] _parts;
    private long _workingSet;

    internal MixedScenario() =>
        _parts = [new AllocScenario(), new CachingScenario(), new ChurnScenario(), new DmaScenario(), new SwapScenario(s => BufferShareBytes(s.WorkingSetBytes))];

    internal override string Name => "mixed";
    internal override string Description => "alloc, caching, churn, DMA and swap steps interleaved on every thread; most of the working set in swappable buffers";

    internal override long PoolShareBytes(long workingSetBytes) => workingSetBytes / PoolShareDivisor;

    /// <summary>What the swap steps' buffers hold: the rest of the working set.</summary>
    internal static long BufferShareBytes(long workingSetBytes) => workingSetBytes - workingSetBytes / PoolShareDivisor;

    /// <summary>Half the pool share, as churn keeps its pool below what it holds: pages keep leaving and returning.</summary>
    internal override long DefaultPoolLimit(long workingSetBytes, long physicalMemoryBytes) => workingSetBytes / PoolShareDivisor / 2;

    internal override void Start(PoolAllocator pool, StressSettings settings, ShrinkerRegistry? shrinkers)
    {
        _workingSet = settings.WorkingSetBytes;
        foreach (var p in _parts) p.Start(pool, settings, shrinkers);
        Console.Error.WriteLine($"mixed: {Size.Format(PoolShareBytes(settings.WorkingSetBytes))} in pool buffers (unswappable), " +
                                $"{Size.Format(BufferShareBytes(settings.WorkingSetBytes))} in swappable buffers");
    }

    internal override IEnumerable<string> Finish() => _parts.SelectMany(p => p.Finish()).ToList();

    internal override IEnumerable<(string Name, string Text, double Value)> Report()
    {
        return _parts.SelectMany(p => p.Report())
            .Append(("mixed.pool_share_bytes", "", PoolShareBytes(_workingSet)))
            .Append(("mixed.buffer_share_bytes", "", BufferShareBytes(_workingSet)));
    }

    internal override void Step(StressWorker w) => _parts[w.Next(_parts.Length)].Step(w);
}
