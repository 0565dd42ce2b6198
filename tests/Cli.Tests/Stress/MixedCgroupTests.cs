using System.Text.Json;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>
/// `pagepool stress mixed --verify --reclaim` under a real memory limit: a child memory cgroup whose limit is half
/// the run's working set (256 MiB, the default on machines of 2 GiB and more). Most of mixed's working set is in
/// buffers the reclaim thread can swap to the file store, so it must finish with every byte intact and the kernel's
/// OOM killer idle; a working set whose unswappable pool share alone reaches the limit must end with exit 3 and its
/// reason, before the kernel kills it.
/// </summary>
[Collection(nameof(ReclaimCgroupTests))] // one cgroup run at a time: each is timed and memory-tight
public sealed class MixedCgroupTests
{
    private const long WorkingSet = 256L << 20, Limit = WorkingSet / 2;

    [Fact]
    public void Stress_mixed_with_reclaim_finishes_verified_in_a_cgroup_limited_to_half_its_working_set()
        => FinishesVerifiedInHalfItsWorkingSet("--reclaim");

    // Without the reclaim thread only the buffer limit (half the cgroup's, by default) keeps the run inside: that is
    // enough for mixed, whose unswappable share is a sixteenth of the working set.
    [Fact]
    public void Stress_mixed_with_default_options_finishes_verified_in_a_cgroup_limited_to_half_its_working_set()
        => FinishesVerifiedInHalfItsWorkingSet();

    private static void FinishesVerifiedInHalfItsWorkingSet(params string[] extra)
    {
        using var cgroup = ChildMemoryCgroup.Create("pagepool-mixed", Limit, out string? refused);
        if (cgroup is null) Assert.Skip(refused!);
        string json = Path.Combine(Path.GetTempPath(), $"pagepool-mixed-cgroup-{Guid.NewGuid():N}.json");
        // An operation count, not a duration: the buffers reach their share of the working set (240 MiB) by the
        // 24,000th operation however slowly a loaded machine runs them (about 6 s on an idle one).
        try
        {
            var run = cgroup.Run(["stress", "mixed", "--verify", .. extra, "-w", "256M", "-n", "24000", "--json", json]);
            string output = run.Stdout + run.Stderr;
            Assert.True(run.ExitCode == 0, $"exit {run.ExitCode} (137 = killed), {cgroup.OomKills} OOM kills:\n{output}");
            Assert.Equal(0, cgroup.OomKills);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var r = doc.RootElement;
            Assert.Equal(WorkingSet, r.GetProperty("settings").GetProperty("working_set_bytes").GetInt64());
            Assert.Equal(0, r.GetProperty("verify_failures").GetInt64());
            Assert.Equal(0, r.GetProperty("invariant_violations").GetInt64());
            var scenario = r.GetProperty("scenario");
            long live = scenario.GetProperty("swap.live_peak_bytes").GetInt64();
            Assert.True(live > Limit, $"the swappable buffers held only {live >> 20} MiB live: not more than the {Limit >> 20} MiB limit");
            // The tool made it fit, not the kernel: more than the limit went through the swap store (under --reclaim the
            // reclaim thread watched too; whether it had to act depends on timing: the buffer limit often suffices).
            long swapped = scenario.GetProperty("swap.out_bytes").GetInt64();
            Assert.True(swapped > Limit, $"only {swapped >> 20} MiB were swapped out: not more than the {Limit >> 20} MiB limit");
            Assert.True(scenario.GetProperty("swap.evictions").GetInt64() > 0, "no buffer was evicted by the buffer limit or reclaim");
            string reclaim = r.GetProperty("reclaim").ToString();
            Console.WriteLine($"mixed {string.Join(' ', extra)} in a cgroup: limit {Limit >> 20} MiB, working set {WorkingSet >> 20} MiB, peak usage {cgroup.PeakBytes >> 20} MiB, " +
                              $"swappable buffers live at peak {live >> 20} MiB, swapped out {swapped >> 20} MiB, reclaim {reclaim}, run {run.Elapsed.TotalSeconds:0.0} s");
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact]
    public void Stress_mixed_whose_unswappable_share_reaches_the_cgroup_limit_ends_with_exit_3_before_the_oom_killer()
    {
        using var cgroup = ChildMemoryCgroup.Create("pagepool-mixed-nofit", Limit, out string? refused);
        if (cgroup is null) Assert.Skip(refused!);
        string json = Path.Combine(Path.GetTempPath(), $"pagepool-mixed-nofit-{Guid.NewGuid():N}.json");
        try
        {
            // 2 GiB: a sixteenth in pool buffers is the whole limit, and no reclaim can swap a pool buffer.
            var run = cgroup.Run(["stress", "mixed", "--verify", "--reclaim", "-w", "2G", "-d", "20s", "--json", json]);
            string output = run.Stdout + run.Stderr;
            Assert.True(run.ExitCode == 3, $"exit {run.ExitCode} (137 = killed, 3 = out of resources), {cgroup.OomKills} OOM kills:\n{output}");
            Assert.Equal(0, cgroup.OomKills);
            Assert.Contains("pagepool: stress: out of resources: the memory cgroup's limit is 128.0 MiB", run.Stderr);
            Assert.Contains("memory the kernel cannot reclaim (no swap), with the reclaim thread asked for everything", run.Stderr);
            Assert.Contains("up to 128.0 MiB in pool buffers, which cannot be swapped", run.Stderr);
            Assert.Contains("Lower --working-set or raise the limit.", run.Stderr);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var r = doc.RootElement;
            Assert.True(r.GetProperty("elapsed_s").GetDouble() < 20, "the run was not stopped early");
            // Stopped, then released and checked like any run: nothing lost, nothing leaked.
            Assert.Equal(1, r.GetProperty("resource_exhausted").GetInt64());
            Assert.Equal(0, r.GetProperty("verify_failures").GetInt64());
            Assert.Equal(0, r.GetProperty("invariant_violations").GetInt64());
            Console.WriteLine($"mixed -w 2G in a {Limit >> 20} MiB cgroup: exit 3 after {r.GetProperty("elapsed_s").GetDouble():0.00} s, peak usage {cgroup.PeakBytes >> 20} MiB");
        }
        finally
        {
            File.Delete(json);
        }
    }
}
