using System.Text.Json;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class StressTests
{
    private static JsonElement RunJson(out PagepoolProcess.Result result, params string[] args)
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-stress-{Guid.NewGuid():N}.json");
        try
        {
            result = PagepoolProcess.Run([.. args, "--json", file]);
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            return doc.RootElement.Clone();
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("alloc")]
    [InlineData("caching")]
    [InlineData("churn")]
    [InlineData("mixed")]
    public void Every_scenario_runs_clean_under_verification(string scenario)
    {
        var json = RunJson(out var r, "stress", scenario, "-n", "1500", "-t", "3", "-w", "32M", "--verify");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(0, json.GetProperty("verify_failures").GetInt64());
        Assert.Equal(0, json.GetProperty("invariant_violations").GetInt64());
        Assert.Equal(1500, json.GetProperty("operations").GetInt64());
        Assert.Contains("every page accounted for exactly once", r.Stdout);
    }

    [Fact]
    public void The_same_seed_and_operation_count_give_the_same_operation_sequence()
    {
        var a = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "32M", "-s", "42");
        var b = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "32M", "-s", "42");
        Assert.Equal(a.GetProperty("sequence_hash").GetString(), b.GetProperty("sequence_hash").GetString());
    }

    [Fact]
    public void A_different_seed_gives_a_different_operation_sequence()
    {
        var a = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "32M", "-s", "42");
        var b = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "32M", "-s", "43");
        Assert.NotEqual(a.GetProperty("sequence_hash").GetString(), b.GetProperty("sequence_hash").GetString());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_corruption_injected_behind_the_library_is_caught_and_the_exit_code_is_1(bool verify)
    {
        string[] args = ["stress", "alloc", "-n", "2000", "-t", "2", "-w", "32M", "--inject-corruption"];
        var json = RunJson(out var r, verify ? [.. args, "--verify"] : args);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal(1, json.GetProperty("verify_failures").GetInt64());
        Assert.Contains("corrupt", r.Stdout);
    }
}
