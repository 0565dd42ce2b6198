using Xunit;

namespace PagePool.Cli.Tests;

// A real memory limit: a child memory cgroup holding only the pagepool process this test starts. The limit sits
// above what `stress churn` holds live but below that plus what the pool keeps when nothing reclaims (the pool
// limit is set far higher, so only the pressure sources can save the run). Without the reclaim thread it cannot fit
// and ends with exit 3 before the kernel's OOM killer acts; with it, it survives and verification finds every byte.
[Collection(nameof(ReclaimCgroupTests))]
public sealed class ReclaimCgroupTests
{
    private const long LimitBytes = 190L << 20;

    // An operation count, not a duration: the pool's peak (about 205 MiB charged with nothing reclaiming, measured
    // without a limit) is reached by the 60,000th operation however slowly a loaded machine runs them.
    private static readonly string[] Churn = ["stress", "churn", "-n", "60000", "-w", "96M", "--pool-limit", "16G", "--verify", "--seed", "7"];

    [Fact]
    public void Under_a_cgroup_memory_limit_the_reclaim_thread_keeps_churn_alive_where_it_is_otherwise_oom_killed()
    {
        using var cgroup = ChildMemoryCgroup.Create("pagepool-test", LimitBytes, out string? refused);
        if (cgroup is null) Assert.Skip(refused!);

        // The JIT build always: the limit is measured against its footprint (the AOT binary's is 20-25 MiB smaller).
        // Without it the pool keeps what churn lets go until the run cannot fit: the tool's own guard ends it with
        // exit 3 and the reason, before the kernel's OOM killer would (exit 137: what happened before the guard).
        var without = cgroup.Run(Churn, jitOnly: true);
        Assert.True(without.ExitCode == 3, $"without reclaim the run cannot fit in {LimitBytes >> 20} MiB and should end with exit 3, it exited {without.ExitCode}:\n{without.Stdout}{without.Stderr}");
        Assert.Equal(0, cgroup.OomKills);
        Assert.Contains("without --reclaim nothing gives the pool's pages back under pressure", without.Stderr);
        Assert.Contains("every page accounted for exactly once", without.Stdout + without.Stderr);

        var with = cgroup.Run([.. Churn, "--reclaim"], jitOnly: true);
        string output = with.Stdout + with.Stderr;
        Assert.True(with.ExitCode == 0, $"with reclaim the run exited {with.ExitCode}:\n{output}");
        Assert.Contains("verification          every byte: 0 failures", output);
        Assert.Contains("every page accounted for exactly once", output);
        Assert.Matches(@"reclaim: [1-9][\d,]* passes freed [1-9]", output);
    }
}
