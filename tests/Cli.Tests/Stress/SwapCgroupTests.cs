using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>
/// `pagepool stress swap --verify` under a real memory limit: a child memory cgroup (v1) whose limit is half the
/// buffers the run keeps live. Without a store that really frees memory the kernel would OOM-kill it.
/// </summary>
public sealed class SwapCgroupTests
{
    private const string MemoryRoot = "/sys/fs/cgroup/memory";
    private const long WorkingSet = 256L << 20, Limit = WorkingSet / 2;

    [Fact]
    public async Task Stress_swap_finishes_verified_in_a_cgroup_limited_to_half_its_working_set()
    {
        string group = Path.Combine(MemoryRoot, $"pagepool-swap-test-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            Directory.CreateDirectory(group);
            File.WriteAllText(Path.Combine(group, "memory.limit_in_bytes"), Limit.ToString());
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.WriteLine($"SKIPPED: this machine refuses to create a memory cgroup under {MemoryRoot}: {e.Message}");
            Assert.Skip($"no memory cgroup v1 can be created here: {e.Message}");
        }
        string json = Path.Combine(Path.GetTempPath(), $"pagepool-cgroup-{Guid.NewGuid():N}.json");
        try
        {
            // The shell moves itself (only itself) into the group, then becomes pagepool: every page is charged there.
            var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add($"echo $$ > {group}/cgroup.procs && exec dotnet \"$0\" \"$@\"");
            psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pagepool.dll"));
            foreach (var a in new[] { "stress", "swap", "--verify", "-d", "5s", "-t", "3", "-w", "256M", "--buffer-limit", "32M", "--pool-limit", "4M", "--json", json })
                psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            Assert.True(p.WaitForExit(120_000), "pagepool did not finish in 120 s");
            string output = await stdout + await stderr;
            string oom = File.ReadAllText(Path.Combine(group, "memory.oom_control"));
            Assert.True(p.ExitCode == 0, $"exit {p.ExitCode} (137 = killed); {oom}\n{output}");
            Assert.Contains("oom_kill 0", oom);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            var r = doc.RootElement;
            Assert.Equal(0, r.GetProperty("verify_failures").GetInt64());
            Assert.Equal(0, r.GetProperty("invariant_violations").GetInt64());
            Assert.True(r.GetProperty("scenario").GetProperty("swap.live_peak_bytes").GetInt64() > Limit,
                $"the run kept only {r.GetProperty("scenario").GetProperty("swap.live_peak_bytes").GetInt64() >> 20} MiB live: not more than the {Limit >> 20} MiB limit");
            long peak = long.Parse(File.ReadAllText(Path.Combine(group, "memory.max_usage_in_bytes")).Trim());
            Console.WriteLine($"cgroup limit {Limit >> 20} MiB, peak usage {peak >> 20} MiB, live buffers at peak {r.GetProperty("scenario").GetProperty("swap.live_peak_bytes").GetInt64() >> 20} MiB");
        }
        finally
        {
            File.Delete(json);
            // The child has exited: the group is empty and can go.
            for (int i = 0; i < 50 && Directory.Exists(group); i++)
            {
                try { Directory.Delete(group); }
                catch (IOException) { Thread.Sleep(100); }
            }
        }
    }
}
