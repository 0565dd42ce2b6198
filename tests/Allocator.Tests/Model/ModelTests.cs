using Xunit;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// Model-based random testing: seeded sequences of operations on the pool, page arrays and DMA devices, legal and
/// illegal, checked step by step against <see cref="PoolModel"/>, <see cref="TtModel"/> and <see cref="DmaModel"/>.
/// A failure is pinned (each step to what it acted on), shrunk to a short sequence that still fails, and printed, so
/// it can be pasted into a test.
/// PAGEPOOL_MODEL_OPS sets the operations per seed (default 10,000; a million for a long run), PAGEPOOL_MODEL_SEEDS
/// the number of seeds (default 12). A run is pinned to one CPU: DMA addresses come from per-CPU IOVA caches and
/// swiotlb areas (as in Linux), so only on one CPU does a seed give the same addresses, and the same run, every time.
/// </summary>
public sealed class ModelTests(ITestOutputHelper output)
{
    private static int Env(string name, int fallback)
        => int.TryParse(Environment.GetEnvironmentVariable(name), out int v) && v > 0 ? v : fallback;

    public static TheoryData<int, long, bool> Runs()
    {
        var data = new TheoryData<int, long, bool>();
        int seeds = Env("PAGEPOOL_MODEL_SEEDS", 12);
        for (int seed = 1; seed <= seeds; seed++)
            data.Add(seed, seed % 3 == 0 ? 0 : seed % 3 == 1 ? 1L << 20 : 64L << 20, // pool limits: none kept, small, roomy
                seed % 4 == 0); // a quarter swap to a file on disk, the others to a memfd (faster)
        return data;
    }

    [Theory]
    [MemberData(nameof(Runs))]
    public void The_system_agrees_with_the_model_on_every_step(int seed, long limitBytes, bool fileStore)
        => Pinned.Run(0, () => AgreesWithTheModel(seed, limitBytes, fileStore), 16 << 20); // same CPU, same per-CPU caches, same run

    private void AgreesWithTheModel(int seed, long limitBytes, bool fileStore)
    {
        var ops = ModelOp.Generate(seed, Env("PAGEPOOL_MODEL_OPS", 10_000));
        string? failure = ModelRun.Execute(ops, limitBytes, fileStore, out int failedStep, out ModelTally tally);
        if (failure is null)
        {
            int[] acted = tally.Acted;
            output.WriteLine($"seed {seed}: {acted.Sum()} of {ops.Count} steps acted ({tally.Refused.Sum()} refused as predicted); " +
                $"{tally.Faults} device faults, {tally.StaleCpuReads} stale CPU reads, {tally.CopiesToDma32} copies to DMA32, " +
                $"{tally.Evictions} evictions, {tally.DeviceBytes} device bytes; by kind (acted/refused):");
            foreach (var kind in Enum.GetValues<ModelOpKind>()) output.WriteLine($"  {kind} {acted[(int)kind]}/{tally.Refused[(int)kind]}");
            // A model whose steps find nothing to act on checks nothing: every kind must have run in a full-size run.
            if (ops.Count >= 5_000)
                foreach (var kind in Enum.GetValues<ModelOpKind>())
                    Assert.True(acted[(int)kind] > 0, $"seed {seed}: no {kind} step acted in {ops.Count}");
            return;
        }
        // Nothing after the failing step matters; the end of the run stands for itself when that is what failed.
        // Pinned to what each step acted on, the steps keep their targets while others are deleted around them.
        var prefix = ops.Take(failedStep + 1).ToList();
        var pinned = ModelRun.Pin(prefix, limitBytes, fileStore);
        if (ModelRun.Execute(pinned, limitBytes, fileStore) is { } pinnedFailure) (prefix, failure) = (pinned, pinnedFailure);
        var (shrunk, shrunkFailure) = Shrink(prefix, limitBytes, fileStore, failure);
        output.WriteLine($"seed {seed}, limit {limitBytes} bytes{(fileStore ? ", file store" : "")}: {ops.Count} steps shrunk to {shrunk.Count}:");
        foreach (var op in shrunk) output.WriteLine($"  {op}");
        Assert.Fail($"seed {seed}: {shrunkFailure}\nshortest failing sequence ({shrunk.Count} steps):\n  " + string.Join("\n  ", shrunk));
    }

    [Fact]
    public void The_shrinker_reduces_a_failing_sequence_to_the_steps_that_matter()
    {
        // A property that fails once two Shrink steps of 7 pages have run: only those two steps must remain.
        var ops = ModelOp.Generate(5, 300);
        ops.Insert(100, new ModelOp(ModelOpKind.Shrink, 7, 0, 0, default, default, Tag: 1000));
        ops.Insert(200, new ModelOp(ModelOpKind.Shrink, 7, 0, 0, default, default, Tag: 1001));
        string? Fails(IReadOnlyList<ModelOp> s) => s.Count(o => o is { Kind: ModelOpKind.Shrink, A: 7 }) >= 2 ? "two" : null;
        var (shrunk, _) = Shrink(ops, Fails, Fails(ops)!);
        Assert.Equal(2, shrunk.Count);
    }

    [Fact]
    public void A_pinned_sequence_acts_as_the_original_and_on_nothing_once_its_target_is_deleted()
    {
        var ops = ModelOp.Generate(3, 3_000);
        Assert.Null(ModelRun.Execute(ops, 1L << 20, false, out _, out ModelTally original));
        var pinned = ModelRun.Pin(ops, 1L << 20, false);
        Assert.Null(ModelRun.Execute(pinned, 1L << 20, false, out _, out ModelTally again));
        // DMA addresses depend on the CPU a step runs on (per-CPU IOVA caches, swiotlb areas, as in Linux), and three
        // kinds decide from them whether to act or what to expect; every other step must act exactly as before.
        ModelOpKind[] addressDependent = [ModelOpKind.DeviceStray, ModelOpKind.DmaUnmapUnmapped, ModelOpKind.DmaSyncPastEnd];
        foreach (var kind in Enum.GetValues<ModelOpKind>().Except(addressDependent))
        {
            Assert.Equal(original.Acted[(int)kind], again.Acted[(int)kind]);
            Assert.Equal(original.Refused[(int)kind], again.Refused[(int)kind]);
        }

        // Without the allocation it names, a pinned release finds nothing: the step does nothing.
        int release = pinned.FindIndex(o => o.Kind == ModelOpKind.Release && o.Pin >= 0);
        var alone = new List<ModelOp> { pinned.First(o => o.Kind == ModelOpKind.Allocate && o.Tag != pinned[release].Pin), pinned[release] };
        Assert.Null(ModelRun.Execute(alone, 1L << 20, false, out _, out ModelTally tally));
        Assert.Equal(0, tally.Acted[(int)ModelOpKind.Release]);
    }

    private static (List<ModelOp>, string) Shrink(List<ModelOp> ops, long limitBytes, bool fileStore, string failure)
        => Shrink(ops, s => ModelRun.Execute(s, limitBytes, fileStore), failure);

    /// <summary>
    /// Delta debugging (Zeller's ddmin, chunk removal only): drop chunks of the sequence, halving the chunk size,
    /// keeping every removal after which the run still fails. Bounded by runs and by time (20 s), so a long
    /// sequence shrinks quickly; what is printed always still fails. First, the shortest tail of 8, 16, 32, ... steps
    /// that fails on its own replaces the sequence: runs of a long sequence are slow, and most failures need only the
    /// last few steps (steps name their targets by index, so a tail is a sequence of its own, not a slice of the run).
    /// </summary>
    private static (List<ModelOp>, string) Shrink(List<ModelOp> ops, Func<IReadOnlyList<ModelOp>, string?> run, string failure)
    {
        var current = ops;
        int budget = 2_000;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int tail = 8; tail < current.Count; tail *= 2, budget--)
        {
            var candidate = current.GetRange(current.Count - tail, tail);
            if (run(candidate) is { } f)
            {
                current = candidate;
                failure = f;
                break;
            }
        }
        for (int chunk = Math.Max(1, current.Count / 2); chunk >= 1 && budget > 0; chunk = chunk == 1 ? 0 : chunk / 2)
        {
            bool removed;
            do
            {
                removed = false;
                for (int start = 0; start < current.Count && budget > 0 && clock.Elapsed.TotalSeconds < 20; budget--)
                {
                    var candidate = new List<ModelOp>(current.Count);
                    candidate.AddRange(current.Take(start));
                    candidate.AddRange(current.Skip(start + chunk));
                    if (candidate.Count < current.Count && run(candidate) is { } f)
                    {
                        current = candidate;
                        failure = f;
                        removed = true;
                    }
                    else
                    {
                        start += chunk;
                    }
                }
            } while (removed && budget > 0);
        }
        return (current, failure);
    }
}
