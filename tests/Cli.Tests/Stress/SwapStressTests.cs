using System.Text.Json;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class SwapStressTests
{
    private static JsonElement RunJson(out PagepoolProcess.Result result, params string[] args) => PagepoolProcess.RunJson(out result, args);

    [Theory]
    [InlineData("file", null)]
    [InlineData("memfd", null)]
    [InlineData("file", "interrupted-restore")]
    [InlineData("file", "failing-write")]
    public void Stress_swap_swaps_out_and_in_and_loses_no_byte(string store, string? inject)
    {
        string[] args = ["stress", "swap", "-n", "800", "-t", "3", "-w", "16M", "--verify", "--swap-store", store];
        if (inject is not null) args = [.. args, "--inject", inject];
        var json = RunJson(out var r, args);
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
        Assert.Equal(0, json.GetProperty("verify_failures").GetInt64());
        Assert.Equal(0, json.GetProperty("invariant_violations").GetInt64());
        Assert.True(json.GetProperty("scenario").GetProperty("swap.out_bytes").GetInt64() > 0, "the buffer limit must have forced swap-outs");
        Assert.True(json.GetProperty("scenario").GetProperty("swap.in_bytes").GetInt64() > 0);
        if (inject is not null) Assert.True(json.GetProperty("scenario").GetProperty("swap.injected").GetInt64() > 0, r.Stdout);
    }

    [Fact]
    public void An_unknown_swap_store_is_refused_by_name()
    {
        var r = PagepoolProcess.Run("stress", "swap", "--swap-store", "tape");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("tape", r.Stderr + r.Stdout);
    }
}
