using PagePool.Cli.Trace;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class TraceTests
{
    [Fact]
    public void A_trace_of_a_short_stress_holds_the_pool_events_and_the_metrics()
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-trace-{Guid.NewGuid():N}.nettrace");
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
            var series = summary.MetricSeries;
            Assert.Contains("pagepool.pool.hit_ratio", series.Keys);
            Assert.Contains("pagepool.pages.pooled{caching=wc}", series.Keys);
            Assert.Contains("PoolMiss", r.Stdout); // the printed summary
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Reading_a_file_that_is_not_a_nettrace_fails_with_a_clear_message()
    {
        string file = Path.GetTempFileName();
        File.WriteAllText(file, "not a trace at all, just some text that is long enough");
        try
        {
            var r = PagepoolProcess.Run("trace", "--read", file);
            Assert.Equal(1, r.ExitCode);
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

    [Fact]
    public void Reading_dev_zero_stops_at_once_with_a_message()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var r = PagepoolProcess.Run("trace", "--read", "/dev/zero");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("not a NetTrace file", r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), $"took {watch.Elapsed}");
    }

    private static string TraceDataFolder([System.Runtime.CompilerServices.CallerFilePath] string here = "")
        => Path.Combine(Path.GetDirectoryName(here)!, "data");
}
