using System.Diagnostics;
using System.Globalization;

namespace PagePool.Cli.Tests;

/// <summary>
/// A child of this test process's own memory cgroup (v1 here, v2 where that is what the machine has) with a limit,
/// holding only the pagepool process a test starts in it; removed on dispose. <see cref="Create"/> returns null with
/// the reason when the machine refuses a child cgroup, and nothing else is a reason to skip.
/// </summary>
internal sealed class ChildMemoryCgroup : IDisposable
{
    private ChildMemoryCgroup(string directory, int version, long limit) => (Directory, Version, LimitBytes) = (directory, version, limit);

    internal string Directory { get; }
    internal int Version { get; }
    internal long LimitBytes { get; }

    /// <summary>The most memory ever charged to the group (v1 memory.max_usage_in_bytes, v2 memory.peak); null when the kernel keeps none.</summary>
    internal long? PeakBytes => Read(Version == 1 ? "memory.max_usage_in_bytes" : "memory.peak") is { } t ? long.Parse(t.Trim(), CultureInfo.InvariantCulture) : null;

    /// <summary>How many processes the kernel's OOM killer ended in the group (v1 memory.oom_control, v2 memory.events).</summary>
    internal long OomKills
    {
        get
        {
            foreach (var line in (Read(Version == 1 ? "memory.oom_control" : "memory.events") ?? "").Split('\n'))
                if (line.StartsWith("oom_kill ", StringComparison.Ordinal)) return long.Parse(line[9..], CultureInfo.InvariantCulture);
            return 0;
        }
    }

    internal static ChildMemoryCgroup? Create(string name, long limitBytes, out string? refused)
    {
        name = $"{name}-{Environment.ProcessId}-{Guid.NewGuid():N}";
        string limit = limitBytes.ToString(CultureInfo.InvariantCulture);
        string? v1 = null, v2 = null;
        foreach (var line in File.ReadAllLines("/proc/self/cgroup"))
        {
            var parts = line.Split(':', 3);
            if (parts.Length != 3) continue;
            if (parts[1].Split(',').Contains("memory")) v1 = "/sys/fs/cgroup/memory" + (parts[2] == "/" ? "" : parts[2]);
            if (parts[0] == "0" && parts[1].Length == 0) v2 = "/sys/fs/cgroup" + (parts[2] == "/" ? "" : parts[2]);
        }
        refused = null;
        try
        {
            if (v1 is not null && File.Exists(Path.Combine(v1, "memory.limit_in_bytes")))
            {
                string dir = Path.Combine(v1, name);
                System.IO.Directory.CreateDirectory(dir);
                File.WriteAllText(Path.Combine(dir, "memory.limit_in_bytes"), limit);
                return new ChildMemoryCgroup(dir, 1, limitBytes);
            }
            if (v2 is not null && File.Exists("/sys/fs/cgroup/cgroup.controllers")
                && File.ReadAllText("/sys/fs/cgroup/cgroup.controllers").Contains("memory", StringComparison.Ordinal))
            {
                string dir = Path.Combine(v2, name);
                System.IO.Directory.CreateDirectory(dir);
                File.WriteAllText(Path.Combine(dir, "memory.max"), limit);
                return new ChildMemoryCgroup(dir, 2, limitBytes);
            }
            refused = "no memory cgroup controller (v1 or v2) for this process";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            refused = $"the machine refuses a child memory cgroup: {e.Message}";
        }
        Console.WriteLine($"skipped: {refused}");
        return null;
    }

    internal sealed record Result(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed);

    /// <summary>
    /// Run pagepool in the group: the shell moves itself (and only itself) into it, then becomes pagepool (the AOT
    /// binary when published and <paramref name="jitOnly"/> is false, else the JIT build), so every page it touches is
    /// charged here.
    /// </summary>
    internal Result Run(string[] args, bool jitOnly = false)
    {
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("echo $$ > \"$0\" && exec \"$@\"");
        psi.ArgumentList.Add(Path.Combine(Directory, "cgroup.procs"));
        if (!jitOnly && PagepoolProcess.AotBinary is { } aot) psi.ArgumentList.Add(aot);
        else
        {
            psi.ArgumentList.Add("dotnet");
            psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pagepool.dll"));
        }
        foreach (var a in args) psi.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"pagepool {string.Join(' ', args)} did not finish in 120 s");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result, clock.Elapsed);
    }

    private string? Read(string file)
    {
        try { return File.ReadAllText(Path.Combine(Directory, file)); }
        catch (IOException) { return null; }
    }

    public void Dispose()
    {
        for (int i = 0; i < 50; i++)
        {
            try { System.IO.Directory.Delete(Directory); return; }
            catch (IOException) { Thread.Sleep(100); } // a killed child may take a moment to leave it
        }
    }
}
