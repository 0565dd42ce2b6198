using System.Diagnostics;

namespace PagePool.Cli.Tests;

/// <summary>Runs the pagepool built next to the tests with extra environment variables (the bench's deliberate slowdown).</summary>
internal static class SlowedPagepool
{
    internal static PagepoolProcess.Result Run(string slowdown, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "pagepool.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment[Bench.BenchSlowdown.Variable] = slowdown;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"pagepool {string.Join(' ', args)} did not finish in 120 s");
        }
        return new PagepoolProcess.Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}
