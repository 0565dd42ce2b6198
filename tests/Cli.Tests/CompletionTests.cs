using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>Shell completion (System.CommandLine's [suggest] directive, through dotnet-suggest) offers real values.</summary>
public sealed class CompletionTests
{
    private static List<string> Complete(string line)
        => Program.CreateRoot().Parse(line, Program.Parsing).GetCompletions(line.Length).Select(c => c.Label).ToList();

    [Fact]
    public void Scenarios_complete()
    {
        var labels = Complete("stress ");
        foreach (var s in new[] { "alloc", "caching", "churn", "mixed" }) Assert.Contains(s, labels);
    }

    [Fact]
    public void Caching_mixes_complete()
        => Assert.Contains("wb:1,wc:1,uc:1", Complete("stress --caching-mix "));

    [Fact]
    public void Bench_groups_complete_from_the_bench_command_s_own_table()
    {
        var labels = Complete("bench --only ");
        foreach (var g in BenchCommand.Groups) Assert.Contains(g.Name, labels);
    }
}
