using System.Text.Json;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>
/// `pagepool stress swap --verify` under a real memory limit: a child memory cgroup whose limit is half the buffers
/// the run keeps live. Without a store that really frees memory the kernel would OOM-kill it.
/// </summary>
[Collection(nameof(ReclaimCgroupTests))] // one cgroup run at a time: each is memory-tight
public sealed class SwapCgroupTests
{
    private const long WorkingSet = 256L << 20, Limit = WorkingSet / 2;

    [Fact]
    public void Stress_swap_finishes_verified_in_a_cgroup_limited_to_half_its_working_set()
    {
        using var cgroup = ChildMemoryCgroup.Create("pagepool-swap", Limit, out string? refused);
        if (cgroup is null) Assert.Skip(refused!);
        string json = Path.Combine(Path.GetTempPath(), $"pagepool-swap-cgroup-{Guid.NewGuid():N}.json");
        try
        {
            // An operation count, not a duration: the buffers reach their share of the working set by then however
            // slowly a loaded machine runs (a 5 s run once kept only 105 MiB live in the full parallel suite).
            var run = cgroup.Run(["stress", "swap", "--verify", "-n", "3000", "-t", "3", "-w", "256M", "--buffer-limit", "32M",
                                  "--pool-limit", "4M", "--json", json]);
            string output = run.Stdout + run.Stderr;
            Assert.True(run.ExitCode == 0, $"exit {run.ExitCode} (137 = killed), {cgroup.OomKills} OOM kills:\n{output}");
            Assert.Equal(0, cgroup.OomKills);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var r = doc.RootElement;
            Assert.Equal(0, r.GetProperty("verify_failures").GetInt64());
            Assert.Equal(0, r.GetProperty("invariant_violations").GetInt64());
            long live = r.GetProperty("scenario").GetProperty("swap.live_peak_bytes").GetInt64();
            Assert.True(live > Limit, $"the run kept only {live >> 20} MiB live: not more than the {Limit >> 20} MiB limit\n{output}");
            Console.WriteLine($"cgroup limit {Limit >> 20} MiB, peak usage {cgroup.PeakBytes >> 20} MiB, live buffers at peak {live >> 20} MiB, run {run.Elapsed.TotalSeconds:0.0} s");
        }
        finally
        {
            File.Delete(json);
        }
    }
}
