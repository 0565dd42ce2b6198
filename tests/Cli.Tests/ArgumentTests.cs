using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>The command line as users meet it: each error one line naming the option, exit 2, nothing run.</summary>
public sealed class ArgumentTests
{
    private static void AssertBadArgument(PagepoolProcess.Result r, string named)
    {
        Assert.Equal(2, r.ExitCode);
        var lines = r.ErrorLines;
        Assert.Single(lines);
        Assert.StartsWith("pagepool: ", lines[0]);
        Assert.Contains(named, lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr); // no stack trace
        Assert.Equal("", r.Stdout);
    }

    [Theory]
    [InlineData("bench --only nosuchgroup", "nosuchgroup")]
    [InlineData("bench --frobnicate", "--frobnicate")]
    [InlineData("nosuchcommand", "nosuchcommand")]
    [InlineData("info --json extra", "extra")]
    [InlineData("stress nosuchscenario", "nosuchscenario")]
    [InlineData("stress --threads 0", "--threads: '0' is not a whole number from 1 to 1024")]
    [InlineData("stress --duration forever", "--duration")]
    [InlineData("stress --working-set lots", "--working-set")]
    [InlineData("stress --caching-mix wb:x", "--caching-mix")]
    [InlineData("stress -d 1s -n 10", "--ops")]
    [InlineData("trace", "trace")]
    [InlineData("trace --pid 1 --read x.nettrace", "--read")]
    [InlineData("bench --only ,", "--only: names no group")]
    public void A_bad_argument_is_one_line_naming_it_and_exit_code_2(string args, string named)
        => AssertBadArgument(PagepoolProcess.Run(args.Split(' ')), named);

    // Issue 8: 57 inputs crashed with exit 134 and a stack trace (validators read values the parser could not convert).
    [Theory]
    [InlineData("stress --threads abc", "--threads: 'abc' is not a whole number from 1 to 1024")]
    [InlineData("stress --threads 1e3", "--threads")]
    [InlineData("stress -t=", "-t")]
    [InlineData("stress -tt", "--threads")]
    [InlineData("stress --threads --verify", "--threads")]
    [InlineData("stress --ops abc", "--ops: 'abc' is not a whole number from 1 to")]
    [InlineData("stress --ops 1e3", "--ops")]
    [InlineData("stress --seed abc", "--seed: 'abc' is not a whole number from 0 to 18446744073709551615")]
    [InlineData("stress --seed 18446744073709551616", "--seed")]
    [InlineData("trace --pid abc", "--pid: 'abc' is not a whole number")]
    [InlineData("bench --repeat abc", "--repeat: 'abc' is not a whole number from 1 to 101")]
    [InlineData("bench --repeat 100000000000", "--repeat: '100000000000' is not a whole number from 1 to 101")]
    [InlineData("bench --repeat 1e3", "--repeat")]
    public void A_number_that_does_not_parse_is_reported_not_a_crash(string args, string named)
        => AssertBadArgument(PagepoolProcess.Run(args.Split(' ')), named);

    [Fact]
    public void An_unknown_option_is_reported_as_an_unknown_option()
        => AssertBadArgument(PagepoolProcess.Run("stress", "--frobnicate"), "unknown option '--frobnicate'");

    [Theory]
    [InlineData("12:1", "the order 12 is outside 0..9")]
    [InlineData("10:1", "the order 10 is outside 0..9")]
    [InlineData("99999999999:1", "outside 0..9")]
    [InlineData("x:1", "the order 'x' is not a whole number from 0 to 9")]
    [InlineData("3", "'3' is not KEY:WEIGHT")]
    [InlineData("3:2,3:1", "order 3 is given twice")]
    [InlineData("3:0", "gives no positive weight")]
    public void An_order_mix_error_says_the_real_reason(string mix, string reason)
        => AssertBadArgument(PagepoolProcess.Run("stress", "--order-mix", mix), reason);

    [Theory]
    [InlineData("wb:2147483647,wc:2147483647", "not a whole number from 0 to 1000000")]
    [InlineData("wb:99999999999999999999", "not a whole number from 0 to 1000000")]
    [InlineData("wb:1000000,wb:1000000,wb:1000000", "wb is given twice")]
    [InlineData("xx:1", "'xx' is not a caching mode; use wb, wc or uc")]
    public void Caching_mix_weights_are_bounded_so_their_sum_cannot_overflow(string mix, string reason)
        => AssertBadArgument(PagepoolProcess.Run("stress", "--caching-mix", mix), reason);

    [Theory]
    [InlineData("--caching-mix", "wb:1", "wc:1")]
    [InlineData("--order-mix", "0:1", "9:1")]
    public void A_mix_given_twice_is_rejected_like_every_other_option(string option, string first, string second)
        => AssertBadArgument(PagepoolProcess.Run("stress", option, first, option, second), option);

    [Theory]
    [InlineData("--working-set", "1e30")]
    [InlineData("--working-set", "1T")]
    [InlineData("--working-set", "99999999999999999999")]
    [InlineData("--working-set", "512K")]
    [InlineData("--pool-limit", "Infinity")]
    [InlineData("--pool-limit", "NaN")]
    [InlineData("--pool-limit", "1T")]
    [InlineData("--pool-limit", "9999999T")]
    public void A_size_that_does_not_fit_the_machine_is_an_error_not_a_saturation(string option, string size)
        => AssertBadArgument(PagepoolProcess.Run("stress", option, size), option);

    [Theory]
    [InlineData("@/tmp")]
    [InlineData("@/dev/zero")]
    [InlineData("@/nonexistent")]
    public void Response_files_are_off_so_an_at_argument_is_just_an_unknown_argument(string arg)
    {
        var r = PagepoolProcess.Run([arg], TimeSpan.FromSeconds(30));
        AssertBadArgument(r, $"'{arg}'");
    }

    [Fact]
    public void Help_shows_defaults_as_typed_and_one_placeholder_style()
    {
        var r = PagepoolProcess.Run("stress", "--help");
        Assert.Equal(0, r.ExitCode);
        foreach (var shown in new[] { "wb:1,wc:1,uc:1", "0:8,1:2,2:2,3:2,4:1,6:1,9:1", "<N>", "<TIME>", "<SIZE>", "<MIX>", "<FILE>" })
            Assert.Contains(shown, r.Stdout);
        Assert.Matches(@"default \d+[KMG], or more where", r.Stdout); // the working set as typed: 256M, not 268435456
        Assert.DoesNotContain("268435456", r.Stdout);
        Assert.DoesNotContain("(WriteBack", r.Stdout);
        Assert.DoesNotMatch("<[a-z]", r.Stdout); // no lower-case placeholders
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
