using System.Diagnostics;

namespace PagePool.Cli.Tests;

/// <summary>
/// Runs pagepool as users do: the published NativeAOT binary (artifacts/pagepool/pagepool) when it exists, so
/// trimming and AOT differences are tested; otherwise the JIT build next to the tests ('dotnet pagepool.dll').
/// Every run carries a tag in its environment, so a test can prove no process of it (a traced child) outlived it.
/// </summary>
internal static class PagepoolProcess
{
    internal sealed record Result(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
    {
        /// <summary>The lines pagepool wrote to stderr.</summary>
        internal string[] ErrorLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    /// <summary>The AOT binary, or null when it has not been published.</summary>
    internal static string? AotBinary { get; } = FindAot();

    private static string? FindAot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (!File.Exists(Path.Combine(dir.FullName, "Allocator.sln"))) continue;
            string bin = Path.Combine(dir.FullName, "artifacts", "pagepool", "pagepool");
            // Only a binary newer than the JIT build tests this source; an old one would test old code.
            string dll = Path.Combine(AppContext.BaseDirectory, "pagepool.dll");
            return File.Exists(bin) && File.GetLastWriteTimeUtc(bin) >= File.GetLastWriteTimeUtc(dll) ? bin : null;
        }
        return null;
    }

    internal static Result Run(params string[] args) => Run(args, TimeSpan.FromSeconds(120));

    /// <summary>Run with --json to a temporary file and return the parsed summary (the file is removed).</summary>
    internal static System.Text.Json.JsonElement RunJson(out Result result, params string[] args)
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-json-{Guid.NewGuid():N}.json");
        try
        {
            result = Run([.. args, "--json", file]);
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file));
            return doc.RootElement.Clone();
        }
        finally
        {
            File.Delete(file);
        }
    }

    internal static Result Run(string[] args, TimeSpan timeout, IDictionary<string, string>? environment = null)
    {
        var psi = AotBinary is { } aot ? new ProcessStartInfo(aot) : new ProcessStartInfo("dotnet");
        if (AotBinary is null) psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pagepool.dll"));
        psi.RedirectStandardOutput = psi.RedirectStandardError = psi.RedirectStandardInput = true;
        foreach (var a in args) psi.ArgumentList.Add(a);
        string tag = Guid.NewGuid().ToString("N");
        psi.Environment["PAGEPOOL_TEST_TAG"] = tag;
        if (environment is not null) foreach (var (k, v) in environment) psi.Environment[k] = v;
        var clock = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            KillTagged(tag);
            throw new TimeoutException($"pagepool {string.Join(' ', args)} did not finish in {timeout.TotalSeconds} s");
        }
        p.WaitForExit();
        var left = Tagged(tag);
        KillTagged(tag);
        if (left.Count > 0)
            throw new InvalidOperationException($"pagepool {string.Join(' ', args)} left processes behind: {string.Join(", ", left)}");
        return new Result(p.ExitCode, stdout.Result, stderr.Result, clock.Elapsed);
    }

    /// <summary>Processes whose environment holds the tag (the run's children, grandchildren...).</summary>
    internal static List<int> Tagged(string tag)
    {
        var found = new List<int>();
        string needle = $"PAGEPOOL_TEST_TAG={tag}";
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                if (File.ReadAllText(Path.Combine(dir, "environ")).Contains(needle, StringComparison.Ordinal)) found.Add(pid);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return found;
    }

    private static void KillTagged(string tag)
    {
        foreach (int pid in Tagged(tag))
        {
            try { using var p = Process.GetProcessById(pid); p.Kill(); } catch (Exception e) when (e is ArgumentException or InvalidOperationException) { }
        }
    }
}
