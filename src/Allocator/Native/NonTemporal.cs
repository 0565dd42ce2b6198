using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PagePool.Native;

/// <summary>
/// Non-temporal (streaming) stores: how the CPU writes write-combined memory. They bypass the cache and
/// need an sfence before anyone else may rely on the data; callers fence once per batch.
/// </summary>
internal static unsafe class NonTemporal
{
    /// <summary>Zero a 32-byte aligned range whose length is a multiple of 128 (pages and blocks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Zero(byte* p, nuint length)
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
    }

    /// <summary>
    /// Copy with streaming stores. The unaligned head and tail (less than one 16-byte unit) are written with
    /// ordinary stores and their lines flushed, which is what a partial write-combining buffer amounts to.
    /// </summary>
    internal static void Copy(byte* dst, byte* src, nuint length)
    {
        nuint head = (nuint)((16 - ((nint)dst & 15)) & 15);
        if (head > length) head = length;
        if (head != 0)
        {
            Buffer.MemoryCopy(src, dst, head, head);
            Shim.FlushNoFence(dst, head);
            dst += head; src += head; length -= head;
        }
        for (; length >= 16; dst += 16, src += 16, length -= 16)
            Sse2.StoreAlignedNonTemporal(dst, Sse2.LoadVector128(src));
        if (length != 0)
        {
            Buffer.MemoryCopy(src, dst, length, length);
            Shim.FlushNoFence(dst, length);
        }
    }

    /// <summary>sfence: makes streaming stores visible before what follows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void StoreFence() => Sse.StoreFence();
}
