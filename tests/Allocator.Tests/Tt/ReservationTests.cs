// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>A reservation is a token, not a thread's lock: any thread may release it, and one left by an ended thread can be.</summary>
public sealed class ReservationTests
{
    private static Thread Run(Action body)
    {
        var t = new Thread(() => body());
        t.Start();
        return t;
    }

    [Fact]
    public void A_reservation_taken_on_one_thread_is_released_on_another()
    {
        using var f = new TtFixture();
        using var t = f.New(4);
        PageArrayReservation held = default;
        Run(() => held = t.Reserve()).Join();
        Assert.True(t.IsReserved);
        Run(() => held.Dispose()).Join();
        Assert.False(t.IsReserved);
        Assert.True(t.TryReserve(TimeSpan.Zero, out var again));
        again.Dispose();
    }

    [Fact]
    public void A_reservation_left_by_a_thread_that_ended_is_released_by_whoever_holds_it()
    {
        using var f = new TtFixture();
        using var t = f.New(4);
        PageArrayReservation left = default;
        var owner = Run(() =>
        {
            left = t.Reserve();
            t.Populate(); // used under the reservation, then the thread ends without releasing
        });
        owner.Join();
        Assert.False(owner.IsAlive);
        Assert.False(t.TryReserve(TimeSpan.FromMilliseconds(20), out _));
        left.Dispose();
        using (t.Reserve())
            Assert.Equal(TtState.Populated, t.State);
    }

    [Fact]
    public void A_second_reservation_waits_for_the_first_and_a_canceled_wait_holds_nothing()
    {
        using var f = new TtFixture();
        using var t = f.New(4);
        var first = t.Reserve();
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(30));
        Assert.Throws<OperationCanceledException>(() => t.Reserve(cancel.Token));
        var entered = new ManualResetEventSlim();
        var second = Run(() =>
        {
            using (t.Reserve()) entered.Set();
        });
        Assert.False(entered.Wait(50), "the second reservation must wait while the first is held");
        first.Dispose();
        Assert.True(entered.Wait(5000));
        second.Join();
        Assert.False(t.IsReserved);
    }

    [Fact]
    public void A_timeout_out_of_range_is_refused_and_reserves_nothing()
    {
        using var f = new TtFixture();
        using var t = f.New(4);
        Assert.Throws<ArgumentOutOfRangeException>(() => t.TryReserve(TimeSpan.FromMilliseconds(-2), out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.TryReserve(TimeSpan.MaxValue, out _));
        Assert.False(t.IsReserved);
        Assert.True(t.TryReserve(Timeout.InfiniteTimeSpan, out var r));
        r.Dispose();
    }

    [Fact]
    public void Disposing_a_reservation_twice_releases_once()
    {
        using var f = new TtFixture();
        using var t = f.New(4);
        var r = t.Reserve();
        var copy = r;
        r.Dispose();
        var next = t.Reserve(); // held by someone else now
        copy.Dispose();         // the old ticket must not release it
        Assert.True(t.IsReserved);
        Assert.False(t.TryReserve(TimeSpan.Zero, out _));
        next.Dispose();
        Assert.False(t.IsReserved);
    }

    [Fact]
    public void Reclaim_skips_a_reserved_buffer_whichever_thread_reserved_it()
    {
        using var f = new TtFixture();
        using var t = f.New(64);
        t.Populate();
        PageArrayReservation held = default;
        Run(() => held = t.Reserve()).Join();
        Assert.Equal(0, f.Accounting.Scan(64));
        Assert.Equal(TtState.Populated, t.State);
        held.Dispose();
        Assert.Equal(64, f.Accounting.Scan(64));
        Assert.Equal(TtState.SwappedOut, t.State);
    }

    [Fact]
    public void Reservations_passed_between_threads_keep_every_buffer_bit_exact_under_reclaim()
    {
        // 6 threads on 2 cores: each reserves its buffer, writes it, and hands the reservation to the next thread,
        // which checks the buffer and releases it; a reclaim thread scans all along.
        using var f = new TtFixture(limitBytes: 8L << 20);
        const int Threads = 6, Rounds = 30;
        var buffers = Enumerable.Range(0, Threads).Select(_ => f.New(32)).ToArray();
        var handoff = new System.Collections.Concurrent.BlockingCollection<(int Buffer, byte[] Data, PageArrayReservation Held)>[Threads];
        for (int i = 0; i < Threads; i++) handoff[i] = new();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        int stop = 0;
        var reclaimer = Run(() => { while (Volatile.Read(ref stop) == 0) { f.Accounting.Scan(16); Thread.Sleep(1); } });
        var workers = Enumerable.Range(0, Threads).Select(w => Run(() =>
        {
            var rng = new Random(w + 7);
            for (int round = 0; round < Rounds; round++)
            {
                int b = w;
                if (!buffers[b].TryReserve(TimeSpan.FromSeconds(5), out var held)) { failures.Enqueue($"worker {w} round {round}: buffer {b} not reservable"); return; }
                if (buffers[b].State != TtState.Populated) buffers[b].Populate();
                var data = TtFixture.Pattern(buffers[b].Bytes, (ulong)rng.Next());
                buffers[b].Write(0, data);
                handoff[(w + 1) % Threads].Add((b, data, held));
                if (!handoff[w].TryTake(out var item, TimeSpan.FromSeconds(5))) { failures.Enqueue($"worker {w} round {round}: nothing handed"); return; }
                var (mine, expected, passed) = item;
                var back = new byte[buffers[mine].Bytes];
                buffers[mine].Read(0, back); // still reserved: reclaim cannot have swapped it out
                if (!back.AsSpan().SequenceEqual(expected)) failures.Enqueue($"buffer {mine} differs in round {round}");
                passed.Dispose();
            }
        })).ToArray();
        foreach (var t in workers) t.Join();
        Volatile.Write(ref stop, 1);
        reclaimer.Join();
        Assert.Empty(failures);
        Assert.All(buffers, t => Assert.False(t.IsReserved));
        foreach (var t in buffers) t.Dispose();
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.PoolInUse);
    }
}
