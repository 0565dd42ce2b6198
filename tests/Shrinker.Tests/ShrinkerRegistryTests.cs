using Xunit;

namespace PagePool.Shrinker.Tests;

public sealed class ShrinkerRegistryTests
{
    [Fact]
    public void Each_shrinker_is_asked_in_proportion_to_what_it_holds()
    {
        var registry = new ShrinkerRegistry();
        var small = new FakeShrinker("small", 1024);
        var large = new FakeShrinker("large", 8192);
        registry.Register(small);
        registry.Register(large);
        registry.Shrink(priority: 3);
        // (count >> 3) * 4 / 2 seeks: 256 and 2048, in batches of 128.
        Assert.Equal(256, small.Asked);
        Assert.Equal(2048, large.Asked);
    }

    [Fact]
    public void More_pressure_asks_for_a_bigger_share_and_priority_0_takes_everything()
    {
        var gentle = new FakeShrinker("gentle", 100_000);
        var hard = new FakeShrinker("hard", 100_000);
        var r1 = new ShrinkerRegistry();
        r1.Register(gentle);
        r1.Shrink(priority: 6);
        var r2 = new ShrinkerRegistry();
        r2.Register(hard);
        r2.Shrink(priority: 0);
        Assert.Equal(100_000 - (100_000 >> 6) * 2 / 128 * 128, gentle.Held);
        Assert.Equal(0, hard.Held);
    }

    [Fact]
    public void A_costlier_shrinker_with_more_seeks_is_asked_for_less()
    {
        var registry = new ShrinkerRegistry();
        var cheap = new FakeShrinker("cheap", 65536);
        var costly = new FakeShrinker("costly", 65536);
        registry.Register(cheap, seeks: 2);
        registry.Register(costly, seeks: 8);
        registry.Shrink(priority: 4);
        Assert.Equal(4 * costly.Asked, cheap.Asked);
    }

    [Fact]
    public void A_shrinker_that_holds_nothing_is_not_scanned()
    {
        var registry = new ShrinkerRegistry();
        var empty = new FakeShrinker("empty", 0);
        registry.Register(empty);
        Assert.Equal(0, registry.Shrink(priority: 0));
        Assert.Equal(0, empty.Calls);
    }

    [Fact]
    public void A_throwing_shrinker_is_reported_and_the_others_still_run()
    {
        var observer = new RecordingObserver();
        var registry = new ShrinkerRegistry { Observer = observer };
        var bad = new FakeShrinker("bad", 1000) { OnScan = () => throw new InvalidOperationException("boom") };
        var good = new FakeShrinker("good", 1000);
        registry.Register(bad);
        registry.Register(good);
        Assert.Equal(1000, registry.Shrink(priority: 0));
        Assert.Contains("failed bad boom", observer.Lines);
        Assert.Contains(observer.Lines, l => l.StartsWith("scanned good ", StringComparison.Ordinal) && l.EndsWith(" 1000", StringComparison.Ordinal));
    }

    [Fact]
    public void Unregister_waits_for_a_pass_in_progress_and_the_shrinker_is_never_called_after()
    {
        var registry = new ShrinkerRegistry();
        using var inScan = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var slow = new FakeShrinker("slow", 1000) { OnScan = () => { inScan.Set(); release.Wait(); } };
        registry.Register(slow);
        var pass = new Thread(() => registry.Shrink(priority: 0));
        pass.Start();
        Assert.True(inScan.Wait(TimeSpan.FromSeconds(5), TestContext.Current.CancellationToken));
        bool removed = false;
        var unregister = new Thread(() => removed = registry.Unregister(slow));
        unregister.Start();
        Assert.False(unregister.Join(TimeSpan.FromMilliseconds(200)), "Unregister returned while the shrinker was scanning");
        release.Set();
        Assert.True(unregister.Join(TimeSpan.FromSeconds(5)) && removed);
        pass.Join();
        long calls = slow.Calls;
        registry.Shrink(priority: 0);
        Assert.Equal(calls, slow.Calls);
    }

    [Fact]
    public void Registering_one_shrinker_twice_is_refused()
    {
        var registry = new ShrinkerRegistry();
        var s = new FakeShrinker("s", 1);
        registry.Register(s);
        Assert.Throws<InvalidOperationException>(() => registry.Register(s));
        Assert.Throws<ArgumentOutOfRangeException>(() => registry.Shrink(priority: 13));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void A_count_near_the_top_of_long_does_not_overflow_the_share_into_nothing(int priority)
    {
        // (count >> priority) * 4 wrapped negative for counts past 2^61, so under the hardest pressure a shrinker
        // that over-reports was asked for nothing at all.
        var registry = new ShrinkerRegistry();
        var huge = new OverReporting(actual: 1000);
        registry.Register(huge);
        Assert.Equal(1000, registry.Shrink(priority));
        Assert.Equal(0, huge.Held);
    }

    // Reports far more than it holds (a count is an estimate); frees what it has.
    private sealed class OverReporting(long actual) : IShrinker
    {
        public long Held = actual;
        public string Name => "over";
        public long Count() => long.MaxValue;
        public long Scan(long toScan)
        {
            long n = Math.Min(toScan, Held);
            Held -= n;
            return n;
        }
    }
}
