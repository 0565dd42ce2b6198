using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace PagePool.Cli.Bench;

/// <summary>
/// Two threads over one: the throughput of an operation on two threads at once divided by its throughput on one.
/// </summary>
/// <remarks>
/// <para>Each repetition runs <see cref="Blocks"/> pairs of blocks, a one-thread block and right after it a two-thread
/// block, and takes the median over the pairs of each pair's two-thread over one-thread throughput: the two blocks of
/// a pair follow each other within a few milliseconds and so see much the same machine, and the median leaves out
/// pairs in which another process took a CPU from either block, as long as fewer than half are hit. Dividing the
/// fastest two-thread block by the fastest one-thread block compares different moments instead (a lone thread is fast
/// whenever its CPU's neighbour is idle, two threads only when both are) and reads low on a shared host.</para>
/// <para>Every block runs on threads of its own, thread t pinned to CPU t (one-thread blocks cycle through the CPUs):
/// left to the scheduler, two threads of a short block often share one CPU for all of it. A block starts when all its
/// threads are running (they spin until the clock starts) and ends when the last one finishes, so thread start and
/// wake-up are outside the time.</para>
/// <para>Each repetition also measures, right after the operation's pairs, the machine's own ceiling (two
/// threads clearing private pages, the same median of pairs), and only the repetitions whose ceiling reached
/// <see cref="KeepFraction"/> of its best in the measurement count (and never fewer than <see cref="MinCounted"/>,
/// those of the highest ceilings). For minutes at a time these VMs run both virtual CPUs as one physical core (the
/// ceiling falls from 1.95 to 1.1-1.5); a repetition taken then measures the host, as a block that lost its CPU does.
/// The repetitions left out are named in a note. A machine whose CPUs never scale keeps every repetition (its best is
/// its usual), so the ratio stays what the machine gives.</para>
/// </remarks>
internal static unsafe class TwoThreadScaling
{
    /// <summary>Pairs of a one-thread and a two-thread block per repetition.</summary>
    internal const int Blocks = 16;

    /// <summary>A repetition counts when the machine's ceiling beside it was at least this fraction of the best one.</summary>
    internal const double KeepFraction = 0.9;

    /// <summary>The fewest repetitions counted (those of the highest ceilings): the gate tests a distribution, not one value.</summary>
    internal const int MinCounted = 3;

    /// <summary>
    /// Add <paramref name="metric"/>: samples of two-thread over one-thread throughput, thread t running
    /// <paramref name="opOf"/>(t) (null: clear a private page, the ceiling itself), <paramref name="ops"/> per thread
    /// and repetition.
    /// </summary>
    internal static void Add(BenchContext ctx, string metric, Func<int, Action?> opOf, int ops, string description)
        => ctx.Add(metric, Measure(ctx, metric, opOf, ops), description);

    private static Samples Measure(BenchContext ctx, string metric, Func<int, Action?> opOf, int ops)
    {
        var own = new nint[2];
        for (int t = 0; t < 2; t++)
        {
            own[t] = (nint)NativeMemory.AlignedAlloc(4096, 4096);
            NativeMemory.Clear((void*)own[t], 4096);
        }
        try
        {
            // The ceiling: each thread clears a private 4 KiB buffer (nothing shared).
            var ceiling = new Action[2];
            var op = new Action[2];
            bool ofCeiling = true;
            for (int t = 0; t < 2; t++)
            {
                nint buffer = own[t];
                ceiling[t] = () => NativeMemory.Clear((void*)buffer, 4096);
                var given = opOf(t);
                ofCeiling &= given is null;
                op[t] = given ?? ceiling[t];
            }
            int block = Math.Max(1, ops / Blocks);
            var reps = new List<(double Ratio, double Ceiling)>();
            ctx.Median(() =>
            {
                double ratio = Ratio(op, block);
                reps.Add((ratio, ofCeiling ? 0 : Ratio(ceiling, block)));
                return ratio;
            });
            reps.RemoveAt(0); // the warm-up
            if (ofCeiling) return new Samples(reps.Select(r => r.Ratio)); // the ceiling itself: every repetition
            var counted = Counted(metric, reps, out string? note);
            if (note is not null) ctx.Note(note);
            return counted;
        }
        finally
        {
            foreach (nint p in own) NativeMemory.AlignedFree((void*)p);
        }
    }

    /// <summary>
    /// The ratios of the repetitions whose ceiling was at least <see cref="KeepFraction"/> of the best, and a note
    /// naming the others (null when all count).
    /// </summary>
    internal static Samples Counted(string metric, IReadOnlyList<(double Ratio, double Ceiling)> reps, out string? note)
    {
        double best = reps.Max(r => r.Ceiling), floor = KeepFraction * best;
        int keep = Math.Max(reps.Count(r => r.Ceiling >= floor), Math.Min(MinCounted, reps.Count));
        var byCeiling = reps.OrderByDescending(r => r.Ceiling).ToList();
        var dropped = byCeiling.Skip(keep).Select(r => r.Ceiling.ToString("F2", CultureInfo.InvariantCulture)).ToList();
        note = dropped.Count == 0 ? null : FormattableString.Invariant(
            $"{metric}: {keep} of {reps.Count} repetitions counted (ceiling at least {KeepFraction * 100:F0}% of its best, {best:F2}, and never fewer than {MinCounted}); the machine's own scaling measured beside the others: {string.Join(", ", dropped)}.");
        return new Samples(byCeiling.Take(keep).Select(r => r.Ratio));
    }

    // One repetition: the median of Blocks pairs of a one-thread block and a two-thread block.
    private static double Ratio(Action[] op, int block)
    {
        Span<double> one = stackalloc double[Blocks], two = stackalloc double[Blocks];
        for (int k = 0; k < Blocks; k++)
        {
            one[k] = Throughput(op, 1, block, firstCpu: k);
            two[k] = Throughput(op, 2, block);
        }
        return PairedRatio(one, two);
    }

    /// <summary>
    /// The median over pairs of <paramref name="two"/>[k] / <paramref name="one"/>[k] (throughputs of blocks run
    /// back to back); with an even count, the mean of the middle two.
    /// </summary>
    internal static double PairedRatio(ReadOnlySpan<double> one, ReadOnlySpan<double> two)
    {
        if (one.Length != two.Length || one.Length == 0)
            throw new ArgumentException($"{one.Length} one-thread and {two.Length} two-thread blocks: pairs need the same non-zero count.", nameof(two));
        var ratios = new double[one.Length];
        for (int k = 0; k < one.Length; k++)
        {
            if (!double.IsFinite(one[k]) || !double.IsFinite(two[k]) || one[k] <= 0 || two[k] <= 0)
                throw new ArgumentException($"Pair {k}: throughputs {one[k]} and {two[k]}; a block's throughput is a finite positive number (a block timed at 0 ticks is too short to measure).", nameof(one));
            ratios[k] = two[k] / one[k];
        }
        return new Samples(ratios).Median;
    }

    // Operations per second of `threads` threads (thread t runs op[t]), from the moment all run to the last one's end.
    private static double Throughput(Action[] op, int threads, int opsPerThread, int firstCpu = 0)
    {
        int ready = 0, go = 0;
        var end = new long[threads];
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int me = t;
            workers[t] = new Thread(() =>
            {
                var body = op[me];
                CpuAffinity.PinTo(firstCpu + me);
                Interlocked.Increment(ref ready);
                while (Volatile.Read(ref go) == 0) Thread.SpinWait(1);
                for (int i = 0; i < opsPerThread; i++) body();
                end[me] = Stopwatch.GetTimestamp();
            });
            workers[t].Start();
        }
        var spin = new SpinWait();
        while (Volatile.Read(ref ready) < threads) spin.SpinOnce(sleep1Threshold: -1);
        long t0 = Stopwatch.GetTimestamp();
        Volatile.Write(ref go, 1);
        foreach (var w in workers) w.Join();
        return threads * (double)opsPerThread / ((end.Max() - t0) / (double)Stopwatch.Frequency);
    }
}
