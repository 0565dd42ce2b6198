using PagePool.Cli.Stress;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>
/// --working-set is a bound: a worker allocates only a buffer that fits its share (issue 8's review: `-w 1M
/// --order-mix 9:1` held 16 MiB, each worker one 2 MiB buffer over), and a share smaller than the largest buffer
/// the order mix asks for is refused up front, so an --ops run cannot spin without progress.
/// </summary>
public sealed class WorkingSetBoundTests
{
    [Theory]
    [InlineData("alloc")]
    [InlineData("caching")]
    [InlineData("churn")]
    public void A_worker_never_holds_more_than_its_share(string name)
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 64L << 20, NormalBytes = 64L << 20 });
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 8L << 20 });
        var scenario = StressScenario.All.Single(s => s.Name == name);
        var settings = new StressSettings
        {
            Scenario = scenario, Threads = 2, Operations = 4000, WorkingSetBytes = 4L << 20, PoolLimitBytes = 8L << 20,
            CachingMix = StressCommand.DefaultCachingMix, OrderMix = new Mix<int>([(0, 1), (8, 1), (9, 1)], o => $"{o}"), Seed = 3,
        };
        var w = new StressWorker(0, pool, settings);
        Assert.Equal(2L << 20, w.ShareBytes);
        long peak = 0;
        for (int i = 0; i < 4000; i++)
        {
            scenario.Step(w);
            peak = Math.Max(peak, w.LiveBytes);
            Assert.True(w.LiveBytes <= w.ShareBytes, $"step {i}: {w.LiveBytes} bytes held, share {w.ShareBytes}");
        }
        Assert.True(peak > w.ShareBytes / 2, $"peak {peak}: the share was barely used");
        Assert.True(w.Operations >= 2000, $"{w.Operations} operations in 4000 steps"); // steps make progress: an --ops run ends
        w.Finish();
    }

    [Theory]
    [InlineData("alloc", "1M", "1", "--order-mix", "9:1", "1 thread", "2M")]
    [InlineData("alloc", "1M", "4", "--order-mix", "9:1", "4 threads", "8M")]
    [InlineData("churn", "2M", "4", "--order-mix", "0:1,8:1", "4 threads", "4M")]
    [InlineData("mixed", "32M", "3", "--order-mix", "0:8,9:1", "3 threads", "96M")]
    public void A_share_smaller_than_the_largest_buffer_is_refused_with_the_smallest_working_set(
        string scenario, string ws, string threads, string option, string mix, string forThreads, string smallest)
    {
        var r = PagepoolProcess.Run("stress", scenario, "-w", ws, "-t", threads, option, mix, "-n", "1000");
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.ErrorLines);
        Assert.StartsWith("pagepool: --working-set: ", line);
        Assert.Contains($"the smallest working set for {forThreads} and this order mix is {smallest}", line);
        Assert.Equal("", r.Stdout);
    }

    [Fact]
    public void A_share_that_holds_the_largest_buffer_exactly_runs()
    {
        var r = PagepoolProcess.Run("stress", "alloc", "-w", "4M", "-t", "2", "--order-mix", "0:1,9:1", "-n", "2000");
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
    }

    [Theory]
    [InlineData("mixed", 32, 1L << 30)]   // a sixteenth in pool buffers: 32 MiB a thread
    [InlineData("alloc", 256, 512L << 20)] // 2 MiB a thread
    public void The_default_working_set_grows_with_the_threads_so_a_default_run_never_refuses(string scenario, int threads, long expected)
    {
        var summary = PagepoolProcess.RunJson(out var r, "stress", scenario, "-t", threads.ToString(), "-n", "64");
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
        Assert.Equal(expected, summary.GetProperty("settings").GetProperty("working_set_bytes").GetInt64());
    }
}
