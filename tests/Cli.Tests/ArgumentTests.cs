using Xunit;

namespace PagePool.Cli.Tests;

public sealed class ArgumentTests
{
    [Theory]
    [InlineData("bench --only nosuchgroup", "nosuchgroup")]
    [InlineData("bench --frobnicate", "--frobnicate")]
    [InlineData("nosuchcommand", "nosuchcommand")]
    [InlineData("info --json extra", "extra")]
    public void A_bad_argument_is_one_line_naming_it_and_exit_code_2(string args, string named)
    {
        var r = PagepoolProcess.Run(args.Split(' '));
        Assert.Equal(2, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("pagepool: ", lines[0]);
        Assert.Contains(named, lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
    }

    [Fact]
    public void Help_lists_the_commands()
    {
        var r = PagepoolProcess.Run("--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("info", r.Stdout);
        Assert.Contains("bench", r.Stdout);
    }
}
