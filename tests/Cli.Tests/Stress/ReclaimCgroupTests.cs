using System.Diagnostics;
using Xunit;

namespace PagePool.Cli.Tests;

// A real memory limit: a child memory cgroup holding only the pagepool process this test starts. The limit sits
// above what `stress churn` holds live but below that plus what the pool keeps when nothing reclaims (the pool
// limit is set far higher, so only the pressure sources can save the run). Without the reclaim thread the kernel's
// OOM killer ends it; with it, it survives and verification finds every byte.
[Collection(nameof(ReclaimCgroupTests))]
public sealed class ReclaimCgroupTests
{
    private const long LimitBytes = 190L << 20;
    private static readonly string[] Churn = ["stress", "churn", "-d", "6s", "-w", "96M", "--pool-limit", "16G", "--verify", "--seed", "7"];

    [Fact]
    public void Under_a_cgroup_memory_limit_the_reclaim_thread_keeps_churn_alive_where_it_is_otherwise_oom_killed()
    {
        if (CreateCgroup() is not { } cgroup)
            return;
        try
        {
            var without = RunIn(cgroup, Churn);
            Assert.True(without.ExitCode == 137, $"without reclaim the run should be OOM-killed at {LimitBytes >> 20} MiB, it exited {without.ExitCode}:\n{without.Output}");

            var with = RunIn(cgroup, [.. Churn, "--reclaim"]);
            Assert.True(with.ExitCode == 0, $"with reclaim the run exited {with.ExitCode}:\n{with.Output}");
            Assert.Contains("verification          every byte: 0 failures", with.Output);
            Assert.Contains("every page accounted for exactly once", with.Output);
            Assert.Matches(@"reclaim: [1-9][\d,]* passes freed [1-9]", with.Output);
        }
        finally
        {
            cgroup.Remove();
        }
    }

    private sealed record Cgroup(string Directory, string ProcsFile)
    {
        internal void Remove()
        {
            for (int i = 0; i < 50; i++)
            {
                try { System.IO.Directory.Delete(Directory); return; }
                catch (IOException) { Thread.Sleep(100); } // the killed child may take a moment to leave it
            }
        }
    }

    // A child of this process's own memory cgroup (v1 here, v2 where that is what the machine has), or null with
    // the reason printed when the machine refuses.
    private static Cgroup? CreateCgroup()
    {
        string name = $"pagepool-test-{Environment.ProcessId}";
        string? v1 = null, v2 = null;
        foreach (var line in File.ReadAllLines("/proc/self/cgroup"))
        {
            var parts = line.Split(':', 3);
            if (parts.Length != 3) continue;
            if (parts[1].Split(',').Contains("memory")) v1 = "/sys/fs/cgroup/memory" + (parts[2] == "/" ? "" : parts[2]);
            if (parts[0] == "0" && parts[1].Length == 0) v2 = "/sys/fs/cgroup" + (parts[2] == "/" ? "" : parts[2]);
        }
        try
        {
            if (v1 is not null && File.Exists(Path.Combine(v1, "memory.limit_in_bytes")))
            {
                string dir = Path.Combine(v1, name);
                Directory.CreateDirectory(dir);
                File.WriteAllText(Path.Combine(dir, "memory.limit_in_bytes"), LimitBytes.ToString(System.Globalization.CultureInfo.InvariantCulture));
                return new Cgroup(dir, Path.Combine(dir, "cgroup.procs"));
            }
            if (v2 is not null && File.Exists("/sys/fs/cgroup/cgroup.controllers")
                && File.ReadAllText("/sys/fs/cgroup/cgroup.controllers").Contains("memory", StringComparison.Ordinal))
            {
                string dir = Path.Combine(v2, name);
                Directory.CreateDirectory(dir);
                File.WriteAllText(Path.Combine(dir, "memory.max"), LimitBytes.ToString(System.Globalization.CultureInfo.InvariantCulture));
                return new Cgroup(dir, Path.Combine(dir, "cgroup.procs"));
            }
            Console.WriteLine("skipped: no memory cgroup controller (v1 or v2) for this process");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.WriteLine($"skipped: the machine refuses a child memory cgroup: {e.Message}");
        }
        return null;
    }

    private sealed record Result(int ExitCode, string Output);

    // The shell moves itself (and only itself) into the cgroup, then becomes pagepool: nothing else is moved.
    private static Result RunIn(Cgroup cgroup, string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "pagepool.dll");
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("echo $$ > \"$0\" && exec dotnet \"$@\"");
        psi.ArgumentList.Add(cgroup.ProcsFile);
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"pagepool {string.Join(' ', args)} did not finish in 120 s");
        }
        return new Result(p.ExitCode, stdout.Result + stderr.Result);
    }
}
