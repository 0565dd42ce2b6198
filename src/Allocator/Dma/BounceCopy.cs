using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PagePool.Dma;

/// <summary>
/// The copies of a DMA round trip (swiotlb_bounce, and the engine's burst into the memory behind an address),
/// made inline. Buffer.MemoryCopy hands anything above 2 KiB to native memmove through a GC transition (the thread
/// lookup, a suspension poll on return): ~8 ns a copy, and a swiotlb round trip of 4 KiB makes four of them.
/// An unrolled loop of unaligned 32-byte loads and stores moves the bytes as fast as memmove's vector loop does.
/// </summary>
internal static unsafe class BounceCopy
{
    // Below this the loop's setup is not worth it and memmove stays in managed code anyway (no transition).
    private const int MinVectorBytes = 128;

    /// <summary>Copy <paramref name="size"/> bytes; the two ranges must not overlap (bounce memory never aliases a buffer).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Copy(byte* src, byte* dst, int size)
    {
        if (!Vector256.IsHardwareAccelerated || size < MinVectorBytes)
        {
            Buffer.MemoryCopy(src, dst, size, size);
            return;
        }
        CopyVectors(src, dst, (nuint)size);
    }

    private static void CopyVectors(byte* src, byte* dst, nuint size)
    {
        // The last 128 bytes are loaded first and stored last: a size that is no multiple of 128 overlaps them
        // with the loop's final block instead of needing a scalar tail.
        byte* srcTail = src + size - 128, dstTail = dst + size - 128;
        var t0 = Vector256.Load(srcTail);
        var t1 = Vector256.Load(srcTail + 32);
        var t2 = Vector256.Load(srcTail + 64);
        var t3 = Vector256.Load(srcTail + 96);
        for (byte* end = src + size - 128; src < end; src += 128, dst += 128)
        {
            var a = Vector256.Load(src);
            var b = Vector256.Load(src + 32);
            var c = Vector256.Load(src + 64);
            var d = Vector256.Load(src + 96);
            a.Store(dst);
            b.Store(dst + 32);
            c.Store(dst + 64);
            d.Store(dst + 96);
        }
        t0.Store(dstTail);
        t1.Store(dstTail + 32);
        t2.Store(dstTail + 64);
        t3.Store(dstTail + 96);
    }
}
