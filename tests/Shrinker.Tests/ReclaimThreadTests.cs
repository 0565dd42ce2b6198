using Xunit;

namespace PagePool.Shrinker.Tests;

public sealed class ReclaimThreadTests
{
    private static void WaitFor(Func<bool> condition, string what)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < until, $"timed out waiting until {what}");
            Thread.Sleep(5);
        }
    }

    [Fact]
    public void Critical_pressure_signalled_frees_everything_at_once()
    {
        var registry = new ShrinkerRegistry();
        var s = new FakeShrinker("s", 50_000);
        registry.Register(s);
        using var thread = new ReclaimThread(registry, [], TimeSpan.FromSeconds(10));
        thread.Start();
        thread.Signal(MemoryPressure.Critical);
        WaitFor(() => s.Held == 0, "the shrinker is empty");
        Assert.True(thread.Passes >= 1);
    }

    [Fact]
    public void Without_pressure_nothing_is_scanned()
    {
        var registry = new ShrinkerRegistry();
        var s = new FakeShrinker("s", 1000);
        registry.Register(s);
        using var thread = new ReclaimThread(registry, [new ConstantSource(MemoryPressure.None)], TimeSpan.FromMilliseconds(5));
        thread.Start();
        Thread.Sleep(100);
        thread.Stop();
        Assert.Equal(0, s.Calls);
    }

    [Fact]
    public void Low_pressure_from_a_source_trims_a_little_per_pass_and_escalates_while_it_lasts()
    {
        var observer = new RecordingObserver();
        var registry = new ShrinkerRegistry { Observer = observer };
        var s = new FakeShrinker("s", 1 << 20);
        registry.Register(s);
        var source = new ConstantSource(MemoryPressure.Low);
        using var thread = new ReclaimThread(registry, [source], TimeSpan.FromMilliseconds(10));
        thread.Start();
        WaitFor(() => thread.Passes >= 3, "three passes ran");
        source.Level = MemoryPressure.None;
        thread.Stop();
        var passes = observer.Lines.Where(l => l.StartsWith("pass ", StringComparison.Ordinal)).Take(3).ToArray();
        Assert.Equal(["pass Low 6", "pass Low 5", "pass Low 4"], passes.Select(p => string.Join(' ', p.Split(' ')[..3])));
        Assert.Contains("pressure test Low", observer.Lines);
    }

    [Fact]
    public void Stop_during_a_scan_waits_for_the_scan_to_finish()
    {
        var registry = new ShrinkerRegistry();
        using var inScan = new ManualResetEventSlim();
        int finished = 0;
        var slow = new FakeShrinker("slow", 1000) { OnScan = () => { inScan.Set(); Thread.Sleep(300); Volatile.Write(ref finished, 1); } };
        registry.Register(slow);
        using var thread = new ReclaimThread(registry, []);
        thread.Start();
        thread.Signal(MemoryPressure.Critical);
        Assert.True(inScan.Wait(TimeSpan.FromSeconds(5), TestContext.Current.CancellationToken));
        thread.Stop();
        Assert.Equal(1, Volatile.Read(ref finished));
        Assert.False(thread.IsRunning);
    }

    [Fact]
    public void A_throwing_shrinker_does_not_kill_the_thread()
    {
        var observer = new RecordingObserver();
        var registry = new ShrinkerRegistry { Observer = observer };
        var bad = new FakeShrinker("bad", 1000) { OnScan = () => throw new InvalidOperationException("boom") };
        registry.Register(bad);
        using var thread = new ReclaimThread(registry, []);
        thread.Start();
        thread.Signal(MemoryPressure.Critical);
        WaitFor(() => observer.Lines.Contains("failed bad boom"), "the failure is reported");
        var good = new FakeShrinker("good", 1000);
        registry.Register(good);
        thread.Signal(MemoryPressure.Critical);
        WaitFor(() => good.Held == 0, "the thread still serves the good shrinker");
        Assert.True(thread.IsRunning);
    }

    [Fact]
    public void A_source_descriptor_that_fires_wakes_the_thread_before_its_tick()
    {
        var registry = new ShrinkerRegistry();
        var s = new FakeShrinker("s", 10_000);
        registry.Register(s);
        using var source = new EventFdSource();
        using var thread = new ReclaimThread(registry, [source], TimeSpan.FromSeconds(30));
        thread.Start();
        Thread.Sleep(50);
        Assert.Equal(0, s.Calls);
        source.Fire();
        WaitFor(() => s.Held == 0, "the fired source woke the thread");
    }

    [Fact]
    public void Starting_twice_is_refused_and_stop_then_start_works()
    {
        using var thread = new ReclaimThread(new ShrinkerRegistry(), []);
        thread.Start();
        Assert.Throws<InvalidOperationException>(thread.Start);
        thread.Stop();
        thread.Stop();
        thread.Start();
        Assert.True(thread.IsRunning);
    }

    [Fact]
    public void A_Start_racing_Dispose_never_leaves_a_thread_running_after_Dispose_returned()
    {
        // Dispose stopped the thread, then marked itself disposed: a Start in between started a thread that polled a
        // closed eventfd (POLLNVAL: a busy loop) and that nothing could stop any more.
        for (int round = 0; round < 3000; round++)
        {
            var thread = new ReclaimThread(new ShrinkerRegistry(), [], TimeSpan.FromMilliseconds(1));
            using var start = new Barrier(2);
            var starter = new Thread(() =>
            {
                start.SignalAndWait();
                // Start again and again: whenever Dispose's stop lets go of the thread, start it once more.
                while (true)
                {
                    try { thread.Start(); }
                    catch (ObjectDisposedException) { return; }
                    catch (InvalidOperationException) { } // running already
                }
            });
            starter.Start();
            start.SignalAndWait(TestContext.Current.CancellationToken);
            thread.Dispose();
            starter.Join();
            Assert.False(thread.IsRunning, $"round {round}: the reclaim thread runs after Dispose returned");
        }
    }

    [Fact]
    public void Stop_from_inside_a_pass_is_refused_instead_of_waiting_for_itself_forever()
    {
        var observer = new RecordingObserver();
        var registry = new ShrinkerRegistry { Observer = observer };
        var s = new FakeShrinker("s", 1000);
        registry.Register(s);
        using var thread = new ReclaimThread(registry, [], TimeSpan.FromSeconds(10));
        var returned = new ManualResetEventSlim();
        s.OnScan = () =>
        {
            try { thread.Stop(); }
            finally { returned.Set(); }
        };
        thread.Start();
        thread.Signal(MemoryPressure.Critical);
        Assert.True(returned.Wait(TimeSpan.FromSeconds(5), TestContext.Current.CancellationToken), "Stop called by a shrinker on the reclaim thread never returned (it joined its own thread)");
        WaitFor(() => observer.Lines.Any(l => l.StartsWith("failed s ", StringComparison.Ordinal)), "the refused Stop is reported as the shrinker's failure");
        Assert.True(thread.IsRunning);
        s.OnScan = null;
        thread.Stop();
        Assert.False(thread.IsRunning);
    }

    [Fact]
    public void An_observer_that_throws_does_not_stop_reclaim_or_kill_the_process()
    {
        // Its exception escaped the pass on the reclaim thread: an unhandled exception, the process ended.
        var registry = new ShrinkerRegistry { Observer = new ThrowingObserver() };
        var s = new FakeShrinker("s", 50_000);
        var failing = new FakeShrinker("failing", 10) { OnScan = () => throw new InvalidOperationException("scan failed") };
        registry.Register(failing);
        registry.Register(s);
        using var thread = new ReclaimThread(registry, [new ConstantSource(MemoryPressure.Low)], TimeSpan.FromMilliseconds(5));
        thread.Start();
        thread.Signal(MemoryPressure.Critical);
        WaitFor(() => s.Held == 0, "the shrinker after the failing one is emptied");
        WaitFor(() => thread.Passes >= 2, "the thread runs further passes");
        Assert.True(thread.IsRunning);
    }

    private sealed class ThrowingObserver : IReclaimObserver
    {
        public void PressureChanged(string source, MemoryPressure level) => throw new InvalidOperationException("observer: pressure");
        public void ReclaimPass(MemoryPressure level, int priority, long freed, long nanoseconds) => throw new InvalidOperationException("observer: pass");
        public void ShrinkerScanned(string shrinker, long asked, long freed) => throw new InvalidOperationException("observer: scanned");
        public void ShrinkerFailed(string shrinker, Exception error) => throw new InvalidOperationException("observer: failed");
    }

    [Fact]
    public void A_null_pressure_source_is_refused_at_construction()
    {
        // It was accepted; the started thread then threw NullReferenceException and ended the process.
        var e = Assert.Throws<ArgumentNullException>(() => new ReclaimThread(new ShrinkerRegistry(), [new ConstantSource(MemoryPressure.None), null!]));
        Assert.Equal("sources", e.ParamName);
        Assert.Contains("source 1", e.Message);
    }

    private sealed class ConstantSource(MemoryPressure level) : PressureSource
    {
        public volatile MemoryPressure Level = level;
        public override string Name => "test";
        public override string Mode => "constant";
        private protected override MemoryPressure Evaluate(bool fired) => Level;
    }

    // Fires through a real eventfd the thread polls, as a cgroup v1 threshold does.
    private sealed class EventFdSource : PressureSource
    {
        private readonly int _fd = Native.Libc.EventFd(0, Native.Libc.EFD_NONBLOCK);
        public override string Name => "eventfd";
        public override string Mode => "test";
        internal override int WaitFd => _fd;
        internal override short WaitEvents => Native.Libc.POLLIN;
        internal override void OnReady(short revents) { Native.Libc.Drain(_fd); base.OnReady(revents); }
        private protected override MemoryPressure Evaluate(bool fired) => fired ? MemoryPressure.Critical : MemoryPressure.None;
        public void Fire() => Native.Libc.Signal(_fd);
        protected override void Dispose(bool disposing) => Native.Libc.Close(_fd);
    }
}
