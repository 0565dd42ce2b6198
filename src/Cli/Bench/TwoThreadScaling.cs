using System.Diagnostics;
using System.Runtime.InteropServices;

namespace PagePool.Cli.Bench;

/// <summary>
/// Two threads over one: the throughput of an operation on two threads at once divided by its throughput on one.
/// </summary>
/// <remarks>
/// <para>Each repetition alternates <see cref="Blocks"/> one-thread and two-thread blocks and divides the best
/// two-thread block by the best one-thread block, as a time metric counts its fastest block: on a machine of two CPUs
/// shared with other work, a block in which another process took a CPU measures that process, not the code, and
/// short blocks make a clean one likely even while neighbours are busy.</para>
/// <para>Every block runs on threads of its own, thread t pinned to CPU t (one-thread blocks alternate between the
/// two CPUs): left to the scheduler, two threads of a short block often share one CPU for all of it. A block starts when all its threads are running (they spin until
/// the clock starts) and ends when the last one finishes, so thread start and wake-up are outside the time.</para>
/// </remarks>
internal static unsafe class TwoThreadScaling
{
    /// <summary>One-thread and two-thread blocks per repetition (each of both kinds).</summary>
    internal const int Blocks = 16;

    /// <summary>Samples of two-thread over one-thread throughput, thread t running <paramref name="opOf"/>(t) (null: clear a private page), <paramref name="ops"/> per thread and repetition.</summary>
    internal static Samples Measure(BenchContext ctx, Func<int, Action?> opOf, int ops)
    {
        var own = new nint[2];
        for (int t = 0; t < 2; t++)
        {
            own[t] = (nint)NativeMemory.AlignedAlloc(4096, 4096);
            NativeMemory.Clear((void*)own[t], 4096);
        }
        try
        {
            // No operation: each thread clears a private 4 KiB buffer (nothing shared: the machine's own ceiling).
            var op = new Action[2];
            for (int t = 0; t < 2; t++)
            {
                nint buffer = own[t];
                op[t] = opOf(t) ?? (() => NativeMemory.Clear((void*)buffer, 4096));
            }
            int block = Math.Max(1, ops / Blocks);
            return ctx.Median(() =>
            {
                double one = 0, two = 0;
                for (int k = 0; k < Blocks; k++)
                {
                    one = Math.Max(one, Throughput(op, 1, block, firstCpu: k));
                    two = Math.Max(two, Throughput(op, 2, block));
                }
                return two / one;
            });
        }
        finally
        {
            foreach (nint p in own) NativeMemory.AlignedFree((void*)p);
        }
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
