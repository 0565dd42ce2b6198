using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PagePool.Cli.Bench;

/// <summary>
/// The floor of a write-combined clear: the instruction sequence the pool uses to clear a WC page (aligned
/// 32-byte non-temporal stores, four per 128 bytes, then one sfence), with nothing else around it. The library
/// keeps its own copy internal (PagePool.Native.NonTemporal) and offers no public clear, so the bench carries
/// this one; keep the two the same or the floor stops being the pool's floor.
/// </summary>
internal static unsafe class StreamingClear
{
    /// <summary>Zero a 32-byte aligned range whose length is a multiple of 128, then fence.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ClearAndFence(byte* p, nuint length)
    {
        if (Avx.IsSupported)
        {
            var z = Vector256<byte>.Zero;
            for (byte* end = p + length; p < end; p += 128)
            {
                Avx.StoreAlignedNonTemporal(p, z);
                Avx.StoreAlignedNonTemporal(p + 32, z);
                Avx.StoreAlignedNonTemporal(p + 64, z);
                Avx.StoreAlignedNonTemporal(p + 96, z);
            }
        }
        else
        {
            var z = Vector128<byte>.Zero;
            for (byte* end = p + length; p < end; p += 64)
            {
                Sse2.StoreAlignedNonTemporal(p, z);
                Sse2.StoreAlignedNonTemporal(p + 16, z);
                Sse2.StoreAlignedNonTemporal(p + 32, z);
                Sse2.StoreAlignedNonTemporal(p + 48, z);
            }
        }
        Sse.StoreFence();
    }
}
