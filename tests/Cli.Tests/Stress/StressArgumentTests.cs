using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>Stress settings that cannot work are refused before anything runs: one line, exit 2, nothing on stdout.</summary>
public sealed class StressArgumentTests
{
    private static void AssertRefused(PagepoolProcess.Result r, params string[] named)
    {
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.ErrorLines);
        Assert.StartsWith("pagepool: ", line);
        foreach (var n in named) Assert.Contains(n, line);
        Assert.Equal("", r.Stdout);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    // Issue 8's review: a missing folder or a regular file as --swap-dir was exit 1, after the run's setup.
    [Fact]
    public void A_swap_dir_that_does_not_exist_is_refused_naming_it()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"pagepool-no-such-dir-{Guid.NewGuid():N}");
        AssertRefused(PagepoolProcess.Run("stress", "swap", "--swap-dir", missing, "-n", "100"), "--swap-dir", missing, "no such folder");
    }

    [Fact]
    public void A_swap_dir_that_is_a_regular_file_is_refused_naming_it()
    {
        string file = Path.GetTempFileName();
        try
        {
            AssertRefused(PagepoolProcess.Run("stress", "swap", "--swap-dir", file, "-n", "100"), "--swap-dir", file, "not a folder");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void An_empty_swap_dir_is_refused()
        => AssertRefused(PagepoolProcess.Run("stress", "swap", "--swap-dir", "", "-n", "100"), "--swap-dir");

    [Fact]
    public void An_existing_swap_dir_runs()
    {
        var r = PagepoolProcess.Run("stress", "swap", "--swap-dir", Path.GetTempPath(), "-n", "200", "-t", "2", "-w", "16M");
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
    }

    // An option another scenario reads would be ignored: the run would not be the one asked for.
    [Theory]
    [InlineData("alloc", "--mask", "40", "only the dma scenario")]
    [InlineData("mixed", "--ops-kind", "direct", "only the dma scenario")]
    [InlineData("churn", "--deferred-flush", "", "only the dma scenario")]
    [InlineData("caching", "--swap-store", "memfd", "only the swap and mixed scenarios")]
    [InlineData("dma", "--buffer-limit", "16M", "only the swap and mixed scenarios")]
    [InlineData("alloc", "--inject", "failing-write", "a fault of the swap and mixed scenarios")]
    [InlineData("swap", "--inject", "wrong-pool", "a fault of the dma scenario")]
    public void An_option_the_scenario_would_ignore_is_refused(string scenario, string option, string value, string says)
    {
        var args = new List<string> { "stress", scenario, option };
        if (value.Length > 0) args.Add(value);
        args.AddRange(["-n", "100"]);
        AssertRefused(PagepoolProcess.Run([.. args]), option, says, $"{scenario} ");
    }
}
