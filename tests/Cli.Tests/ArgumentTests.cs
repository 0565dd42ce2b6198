using Xunit;

namespace PagePool.Cli.Tests;

public sealed class ArgumentTests
{
    [Theory]
    [InlineData("bench --only nosuchgroup", "nosuchgroup")]
    [InlineData("bench --frobnicate", "--frobnicate")]
    [InlineData("nosuchcommand", "nosuchcommand")]
    [InlineData("info --json extra", "extra")]
    [InlineData("stress nosuchscenario", "nosuchscenario")]
    [InlineData("stress --threads 0", "--threads")]
    [InlineData("stress --duration forever", "--duration")]
    [InlineData("stress --working-set lots", "--working-set")]
    [InlineData("stress --caching-mix wb:x", "--caching-mix")]
    [InlineData("stress --order-mix 10:1", "--order-mix")]
    [InlineData("stress -d 1s -n 10", "--ops")]
    [InlineData("trace", "trace")]
    [InlineData("trace --pid 1 --read x.nettrace", "trace")]
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
