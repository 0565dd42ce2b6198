using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using PagePool.Dma;
using PagePool.Memory;

namespace PagePool.Cli.Bench;

/// <summary>
/// The DMA layer's fast paths: an IOVA cache hit, a one-page IOMMU map + unmap with deferred invalidation (alone and
/// on two threads), and a full swiotlb bounce round trip against the memcpy it is made of.
/// </summary>
internal static unsafe class DmaBench
{
    internal static void Run(BenchContext ctx)
    {
        int ops = ctx.Quick ? 200_000 : 1_000_000;

        var iova = new IovaAllocator(1);
        for (int i = 0; i < 8; i++) iova.FreeRange(iova.AllocateRange(1, 0xFFFFF), 1); // warm the CPU caches
        ctx.Add("iova.alloc_free.ns", ctx.NsPerOp("iova.alloc_free.ns", ops, () => iova.FreeRange(iova.AllocateRange(1, 0xFFFFF), 1)),
            "allocate + free one IOVA page, per-CPU cache hit");

        using var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 80L << 20, NormalBytes = 64L << 20 });
        using var platform = new DmaPlatform(memory, new DmaPlatformOptions { DeferredFlush = true, SwiotlbBytes = 16L << 20 });
        var gpu = platform.CreateDevice(new DmaDeviceOptions { Name = "bench-gpu", OpsKind = DmaOpsKind.Iommu });
        var page = memory.AllocateBlock(Zone.Normal, 0);
        ctx.Add("iommu.map_unmap.ns", ctx.NsPerOp("iommu.map_unmap.ns", ops, () => MapUnmap(gpu, page)),
            "map + unmap one 4 KiB page through the IOMMU, deferred IOTLB flush");

        var pages = new[] { memory.AllocateBlock(Zone.Normal, 0), memory.AllocateBlock(Zone.Normal, 0) };
        TwoThreadScaling.Add(ctx, "iommu.scaling.2t", t => () => MapUnmap(gpu, pages[t]), ops,
            "IOMMU map + unmap throughput with two threads / one thread, one device");

        byte* src = (byte*)NativeMemory.AlignedAlloc(4096, 4096), dst = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
        byte* data = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
        try
        {
            NativeMemory.Fill(src, 4096, 0x5A);
            NativeMemory.Fill(data, 4096, 0xA5);
            int copies = ctx.Quick ? 200_000 : 1_000_000;
            var sw = platform.CreateDevice(new DmaDeviceOptions { Name = "bench-sw", OpsKind = DmaOpsKind.Swiotlb });
            var buffer = memory.AllocateBlock(Zone.Dma32, 0);
            int trips = ctx.Quick ? 50_000 : 200_000;
            // The target is a ratio of these two (a round trip at most 3 x 2 memcpy), so they are timed in
            // alternating blocks: a burst of load from other processes on a shared machine then lands on both sides.
            // The floor is the fastest copy this process has: the bounce path copies with an inline vector loop, which
            // is faster than Buffer.MemoryCopy (that hands 4 KiB to native memmove through a GC transition), so the
            // baseline is the same loop; memmove's figure is kept beside it. What the device writes comes from a
            // page-aligned buffer as the baseline's do (a managed array starts 8 bytes into a line, and half its
            // 32-byte loads would then straddle two lines: ~8 ns a round trip that the baseline never pays).
            var (copy, trip) = SideBySide(ctx,
                "baseline.memcpy_4k.ns", copies, () => VectorCopy4k(src, dst),
                "swiotlb.roundtrip_4k.ns", trips, () =>
                {
                    ulong dma = sw.MapPage(buffer, 0, 4096, DmaDirection.Bidirectional);
                    sw.Engine.Write(dma, new ReadOnlySpan<byte>(data, 4096));
                    sw.SyncForCpu(dma, 4096, DmaDirection.Bidirectional);
                    sw.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
                });
            ctx.Add("baseline.memcpy_4k.ns", copy, "copy 4 KiB of warm, cached memory: an inline loop of 32-byte vector loads and stores, as the bounce copies");
            ctx.Add("baseline.memcpy_4k.memmove.ns", ctx.NsPerOp("baseline.memcpy_4k.memmove.ns", copies, () => Buffer.MemoryCopy(src, dst, 4096, 4096)),
                "the same copy with Buffer.MemoryCopy (native memmove behind a GC transition)");
            ctx.Add("swiotlb.roundtrip_4k.ns", trip,
                "swiotlb: map BIDIR (bounce to), device writes 4 KiB, sync_for_cpu (bounce back), unmap (bounce back)");
        }
        finally
        {
            NativeMemory.AlignedFree(src);
            NativeMemory.AlignedFree(dst);
            NativeMemory.AlignedFree(data);
        }
    }

    // The copy loop of the library's bounce path (PagePool.Dma.BounceCopy, internal), for 4 KiB: 128 bytes a turn.
    private static void VectorCopy4k(byte* src, byte* dst)
    {
        for (int i = 0; i < 4096; i += 128)
        {
            var a = Vector256.Load(src + i);
            var b = Vector256.Load(src + i + 32);
            var c = Vector256.Load(src + i + 64);
            var d = Vector256.Load(src + i + 96);
            a.Store(dst + i);
            b.Store(dst + i + 32);
            c.Store(dst + i + 64);
            d.Store(dst + i + 96);
        }
    }

    private static void MapUnmap(DmaDevice device, PageHandle page)
    {
        ulong dma = device.MapPage(page, 0, 4096, DmaDirection.Bidirectional);
        device.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
    }

    // As BenchContext.NsPerOp (each repetition counts the fastest of its blocks), for two metrics whose blocks
    // alternate within every repetition.
    private static (Samples A, Samples B) SideBySide(BenchContext ctx, string nameA, int opsA, Action a, string nameB, int opsB, Action b)
    {
        var opA = ctx.Slowdown.Wrap(nameA, a);
        var opB = ctx.Slowdown.Wrap(nameB, b);
        int blockA = Math.Max(1, opsA / BenchContext.BlocksPerRep), blockB = Math.Max(1, opsB / BenchContext.BlocksPerRep);
        var repsA = new double[ctx.Reps];
        var repsB = new double[ctx.Reps];
        for (int r = -1; r < ctx.Reps; r++) // -1: the warm-up (JIT, page faults, caches), not kept
        {
            double fastestA = double.MaxValue, fastestB = double.MaxValue;
            for (int k = 0; k < BenchContext.BlocksPerRep; k++)
            {
                fastestA = Math.Min(fastestA, BenchContext.NsPerOp(blockA, opA));
                fastestB = Math.Min(fastestB, BenchContext.NsPerOp(blockB, opB));
            }
            if (r < 0) continue;
            repsA[r] = fastestA;
            repsB[r] = fastestB;
        }
        return (new Samples(repsA), new Samples(repsB));
    }
}
