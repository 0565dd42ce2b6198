using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using PagePool.Buffers;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Cli.Bench;

/// <summary>
/// PagePool's <see cref="MemoryPool{T}"/> against the two pools .NET code uses for 4 KiB buffers, side by side in
/// one run, none of them clearing: a rent and a dispose (or return) of one 4 KiB buffer, warm.
/// </summary>
internal static class MemoryPoolBench
{
    internal static void Run(BenchContext ctx)
    {
        int ops = ctx.Quick ? 200_000 : 2_000_000;
        using var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 256L << 20 });
        using var allocator = new PoolAllocator(memory);
        using var pool = new PageMemoryPool(allocator);

        // Interleaved repetitions, so a slow moment of the shared machine falls on all three alike.
        PagePoolLoop(pool, ops); // warm-up: JIT tiers, the pool's first pages
        SharedLoop(ops);
        ArrayPoolLoop(ops);
        var o = new double[ctx.Reps];
        var s = new double[ctx.Reps];
        var a = new double[ctx.Reps];
        for (int i = 0; i < ctx.Reps; i++)
        {
            o[i] = PagePoolLoop(pool, ops);
            s[i] = SharedLoop(ops);
            a[i] = ArrayPoolLoop(ops);
        }
        // Every repetition is kept (the gate tests repetitions); the ratio is one figure, of the medians.
        Samples ours = new(o), shared = new(s), array = new(a);
        ctx.Add("memorypool.rent_return_4k.ns", ours, "PageMemoryPool.Rent(4096) + Dispose, warm, no clearing");
        ctx.Add("baseline.memorypool_shared_4k.ns", shared, "MemoryPool<byte>.Shared.Rent(4096) + Dispose (same run)");
        ctx.Add("baseline.arraypool_4k.ns", array, "ArrayPool<byte>.Shared.Rent(4096) + Return (same run)");
        ctx.Add("memorypool.ratio_to_fastest", ours.Median / Math.Min(shared.Median, array.Median),
            "memorypool.rent_return_4k / the faster baseline (target <= 1.0)");
    }

    // Each loop is its own method, not a delegate per operation: the call overhead would dwarf a 20 ns rent.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static double PagePoolLoop(PageMemoryPool pool, int ops)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < ops; i++) pool.Rent(4096).Dispose();
        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / ops;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static double SharedLoop(int ops)
    {
        var pool = MemoryPool<byte>.Shared;
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < ops; i++) pool.Rent(4096).Dispose();
        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / ops;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static double ArrayPoolLoop(int ops)
    {
        var pool = ArrayPool<byte>.Shared;
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < ops; i++) pool.Return(pool.Rent(4096));
        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / ops;
    }
}
