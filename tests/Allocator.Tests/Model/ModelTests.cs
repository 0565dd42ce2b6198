using Xunit;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// Model-based random testing: seeded sequences of pool operations, legal and illegal, checked step by step
/// against <see cref="PoolModel"/>. A failure is shrunk to a short sequence that still fails and printed, so it
/// can be pasted into a test. PAGEPOOL_MODEL_OPS sets the operations per seed (default 10,000; a million for a
/// long run), PAGEPOOL_MODEL_SEEDS the number of seeds (default 12).
/// </summary>
public sealed class ModelTests(ITestOutputHelper output)
{
    private static int Env(string name, int fallback)
        => int.TryParse(Environment.GetEnvironmentVariable(name), out int v) && v > 0 ? v : fallback;

    public static TheoryData<int, long> Runs()
    {
        var data = new TheoryData<int, long>();
        int seeds = Env("PAGEPOOL_MODEL_SEEDS", 12);
        for (int seed = 1; seed <= seeds; seed++)
            data.Add(seed, seed % 3 == 0 ? 0 : seed % 3 == 1 ? 1L << 20 : 64L << 20); // limits: none kept, small, roomy
        return data;
    }

    [Theory]
    [MemberData(nameof(Runs))]
    public void The_pool_agrees_with_the_model_on_every_step(int seed, long limitBytes)
    {
        var ops = ModelOp.Generate(seed, Env("PAGEPOOL_MODEL_OPS", 10_000));
        string? failure = ModelRun.Execute(ops, limitBytes, out int failedStep);
        if (failure is null) return;
        // Nothing after the failing step matters; the end of the run stands for itself when that is what failed.
        var (shrunk, shrunkFailure) = Shrink(ops.Take(failedStep + 1).ToList(), limitBytes, failure);
        output.WriteLine($"seed {seed}, limit {limitBytes} bytes: {ops.Count} steps shrunk to {shrunk.Count}:");
        foreach (var op in shrunk) output.WriteLine($"  {op}");
        Assert.Fail($"seed {seed}: {shrunkFailure}\nshortest failing sequence ({shrunk.Count} steps):\n  " + string.Join("\n  ", shrunk));
    }

    [Fact]
    public void The_shrinker_reduces_a_failing_sequence_to_the_steps_that_matter()
    {
        // A property that fails once two Shrink steps of 7 pages have run: only those two steps must remain.
        var ops = ModelOp.Generate(5, 300);
        ops.Insert(100, new ModelOp(ModelOpKind.Shrink, 7, 0, 0, default, default));
        ops.Insert(200, new ModelOp(ModelOpKind.Shrink, 7, 0, 0, default, default));
        string? Fails(IReadOnlyList<ModelOp> s) => s.Count(o => o is { Kind: ModelOpKind.Shrink, A: 7 }) >= 2 ? "two" : null;
        var (shrunk, _) = Shrink(ops, Fails, Fails(ops)!);
        Assert.Equal(2, shrunk.Count);
    }

    private static (List<ModelOp>, string) Shrink(List<ModelOp> ops, long limitBytes, string failure)
        => Shrink(ops, s => ModelRun.Execute(s, limitBytes), failure);

    /// <summary>
    /// Delta debugging (Zeller's ddmin, chunk removal only): drop chunks of the sequence, halving the chunk size,
    /// keeping every removal after which the run still fails. Bounded by runs and by time (20 s), so a long
    /// sequence shrinks quickly; what is printed always still fails.
    /// </summary>
    private static (List<ModelOp>, string) Shrink(List<ModelOp> ops, Func<IReadOnlyList<ModelOp>, string?> run, string failure)
    {
        var current = ops;
        int budget = 2_000;
        var clock = System.Diagnostics.Stopwatch.StartNew();
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
