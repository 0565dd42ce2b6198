using PagePool.Cli.Trace;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class TraceTests
{
    [Fact]
    public void A_trace_of_a_short_stress_holds_the_pool_events_and_the_metrics_and_a_damaged_copy_is_exit_1()
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-trace-{Guid.NewGuid():N}.nettrace");
        string cut = file + ".cut";
        try
        {
            var r = PagepoolProcess.Run("trace", "-o", file, "--", "stress", "churn", "-d", "2500ms", "-t", "2", "-w", "32M");
            Assert.Equal(0, r.ExitCode);
            var events = NettraceReader.ReadAll(file);
            var names = events.Where(e => e.Metadata.Provider == "PagePool").Select(e => e.Metadata.Name).ToHashSet();
            Assert.Contains("PoolMiss", names);
            Assert.Contains("CachingTransition", names);
            Assert.Contains("PoolLimitHit", names); // churn keeps the pool over its limit
            var miss = events.First(e => e.Metadata.Name == "PoolMiss");
            Assert.InRange((int)miss.Field("order")!, 0, 9);
            var summary = new TraceSummary();
            events.ForEach(summary.Add);
            var series = summary.MetricSeries.Keys;
            Assert.Contains(series, k => k.StartsWith("pagepool.pool.hits{", StringComparison.Ordinal));
            Assert.Contains(series, k => k.StartsWith("pagepool.pages.pooled{", StringComparison.Ordinal) && k.Contains("caching=wc") && k.Contains("pool=pagepool-"));
            Assert.DoesNotContain(series, k => k.StartsWith("pagepool.pool.hit_ratio", StringComparison.Ordinal));
            Assert.Contains("PoolMiss", r.Stdout); // the printed summary

            // The same trace cut short is a damaged trace: exit 1, not 2 (it is a trace) and not a crash.
            var bytes = File.ReadAllBytes(file);
            File.WriteAllBytes(cut, bytes[..(bytes.Length / 2)]);
            var damaged = PagepoolProcess.Run("trace", "--read", cut);
            Assert.Equal(1, damaged.ExitCode);
            Assert.Single(damaged.ErrorLines);
            Assert.DoesNotContain("   at ", damaged.Stderr);
        }
        finally
        {
            File.Delete(file);
            File.Delete(cut);
        }
    }

    [Fact]
    public void Reading_a_file_that_is_not_a_nettrace_is_bad_input_exit_2()
    {
        string file = Path.GetTempFileName();
        File.WriteAllText(file, "not a trace at all, just some text that is long enough");
        try
        {
            var r = PagepoolProcess.Run("trace", "--read", file);
            Assert.Equal(2, r.ExitCode);
            Assert.Contains("not a NetTrace file", r.Stderr);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Reading_a_damaged_trace_exits_1_naming_the_byte_where_it_stopped()
    {
        string file = Path.GetTempFileName();
        var trace = File.ReadAllBytes(Path.Combine(TraceDataFolder(), "stress-churn.nettrace"));
        File.WriteAllBytes(file, trace.AsSpan(0, trace.Length - 1000).ToArray());
        try
        {
            var r = PagepoolProcess.Run("trace", "--read", file);
            Assert.Equal(1, r.ExitCode);
            Assert.Contains("at byte", r.Stderr);
            Assert.DoesNotContain("   at ", r.Stderr); // a message, not a stack trace
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("/dev/zero")]
    [InlineData("/tmp")]
    [InlineData("/nonexistent.nettrace")]
    public void Reading_something_that_is_not_a_file_is_exit_2_at_once(string path)
    {
        var r = PagepoolProcess.Run(["trace", "--read", path], TimeSpan.FromSeconds(20));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--read", r.Stderr);
    }

    [Fact]
    public void An_unknown_trace_option_is_reported_before_any_child_starts()
    {
        var r = PagepoolProcess.Run(["trace", "--bogus", "--", "info"], TimeSpan.FromSeconds(20));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("unknown option '--bogus'", r.Stderr);
        Assert.DoesNotContain("collecting", r.Stderr);
        Assert.Equal("", r.Stdout); // info never ran
    }

    [Fact]
    public void A_wrong_traced_command_fails_before_a_session_starts()
    {
        var r = PagepoolProcess.Run(["trace", "--", "stress", "bogus"], TimeSpan.FromSeconds(20));
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.ErrorLines);
        Assert.Contains("unknown scenario 'bogus'", r.Stderr);
        Assert.DoesNotContain("collecting", r.Stderr);
    }

    [Fact]
    public void A_stale_diagnostic_socket_is_no_dotnet_process_answers_and_exit_2()
    {
        string tmp = Directory.CreateTempSubdirectory("pagepool-sock-").FullName;
        try
        {
            int dead = Enumerable.Range(0, 1000).Select(i => 3_999_000 - i).First(p => !Directory.Exists($"/proc/{p}"));
            File.WriteAllText(Path.Combine(tmp, $"dotnet-diagnostic-{dead}-12345-socket"), "");
            var r = PagepoolProcess.Run(["trace", "--pid", dead.ToString(), "-d", "1s", "-o", Path.Combine(tmp, "t.nettrace")],
                TimeSpan.FromSeconds(30), new Dictionary<string, string> { ["TMPDIR"] = tmp });
            Assert.Equal(2, r.ExitCode);
            Assert.Single(r.ErrorLines);
            Assert.Contains("no .NET process answers on", r.Stderr);
            Assert.False(File.Exists(Path.Combine(tmp, "t.nettrace")));
        }
        finally
        {
            Directory.Delete(tmp, recursive: true);
        }
    }

    [Fact]
    public void A_trace_shorter_than_its_child_ends_the_child()
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-trace-{Guid.NewGuid():N}.nettrace");
        try
        {
            // The harness fails the test if the 60 s stress outlives the trace.
            var r = PagepoolProcess.Run(["trace", "-d", "1500ms", "-o", file, "--", "stress", "alloc", "-d", "60s", "-t", "2", "-w", "8M"],
                TimeSpan.FromSeconds(45));
            Assert.Equal(0, r.ExitCode);
            Assert.True(r.Elapsed < TimeSpan.FromSeconds(40), $"took {r.Elapsed}");
            Assert.True(File.Exists(file));
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static string TraceDataFolder() => Path.Combine(AppContext.BaseDirectory, "Trace", "data");
}

public sealed class TraceSummaryFormatTests
{
    [Theory]
    [InlineData(1_928_000_000d, "1.93 G")]
    [InlineData(241_600_000d, "241.6 M")]
    [InlineData(12_345d, "12,345")]
    [InlineData(0.5d, "0.5")]
    public void Metric_values_print_as_a_person_reads_them_never_in_exponent_notation(double value, string shown)
        => Assert.Equal(shown, PagePool.Cli.Trace.TraceSummary.Format(value));
}
