using System.Diagnostics;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>Running out of memory or address space is its own exit code (3), not "invariants BROKEN" (1).</summary>
public sealed class ResourceExhaustionTests
{
    [Fact]
    public async Task An_mmap_that_fails_with_ENOMEM_under_ulimit_is_exit_3_with_the_pool_still_consistent()
    {
        // The JIT host cannot start at all under a 2.5 GB address-space limit; the AOT binary can.
        Assert.SkipWhen(PagepoolProcess.AotBinary is null, "needs the published AOT binary (artifacts/pagepool/pagepool)");
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"ulimit -v 2500000; exec '{PagepoolProcess.AotBinary}' stress alloc -t 2 -w 4G -n 20000");
        using var p = Process.Start(psi)!;
        string stdout, stderr;
        try
        {
            var stdoutTask = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            var stderrTask = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            await p.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(120), TestContext.Current.CancellationToken);
            (stdout, stderr) = (await stdoutTask, await stderrTask);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
        Assert.Equal(3, p.ExitCode);
        Assert.Contains("pagepool: stress: out of resources: ", stderr);
        Assert.Contains("ENOMEM", stderr);
        Assert.Contains("invariants            ok", stdout);
        Assert.DoesNotContain("   at ", stderr);
    }
}
