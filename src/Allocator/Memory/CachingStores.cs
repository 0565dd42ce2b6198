namespace PagePool.Memory;

/// <summary>
/// Writing and clearing memory the way a mapping of a given caching mode is written: plain stores for
/// <see cref="CachingMode.WriteBack"/>, streaming (non-temporal) stores and a fence for
/// <see cref="CachingMode.WriteCombined"/>, and stores followed by a flush of every line touched for
/// <see cref="CachingMode.Uncached"/>. For callers that hold a block (<see cref="PhysicalMemory.GetSpan"/>) and
/// write it directly; <see cref="PhysicalMemory.Write"/> does the same with the block's own mode looked up.
/// </summary>
public static unsafe class CachingStores
{
    /// <summary>Copy <paramref name="source"/> into <paramref name="destination"/> as a <paramref name="caching"/> mapping stores.</summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than <paramref name="source"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="caching"/> is not a defined mode.</exception>
    public static void Copy(CachingMode caching, ReadOnlySpan<byte> source, Span<byte> destination)
    {
        CheckMode(caching);
        if (destination.Length < source.Length)
            throw new ArgumentException($"The destination holds {destination.Length} bytes, the source has {source.Length}.", nameof(destination));
        fixed (byte* src = source)
        fixed (byte* dst = destination)
            PhysicalMemory.StoreAs(caching, dst, src, (nuint)source.Length);
    }

    /// <summary>
    /// Zero whole pages as a <paramref name="caching"/> mapping does: the clear the pool applies to every page it
    /// hands out (WB: aligned vector stores, as Linux's clear_page; WC: streaming stores and one fence; UC: clear
    /// and flush). <paramref name="pages"/> must start on a 4 KiB boundary and be a whole number of pages.
    /// </summary>
    /// <exception cref="ArgumentException">The span is not page aligned or not a whole number of pages.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="caching"/> is not a defined mode.</exception>
    public static void ClearPages(CachingMode caching, Span<byte> pages)
    {
        CheckMode(caching);
        fixed (byte* p = pages)
        {
            if (((nuint)p & (PhysicalMemory.PageSize - 1)) != 0 || (pages.Length & (PhysicalMemory.PageSize - 1)) != 0)
                throw new ArgumentException($"ClearPages takes whole, page-aligned pages; got {pages.Length} bytes at 0x{(nuint)p:x}.", nameof(pages));
            PhysicalMemory.ClearAs(caching, p, (nuint)pages.Length);
        }
    }

    private static void CheckMode(CachingMode caching)
    {
        if ((uint)caching > (uint)CachingMode.Uncached)
            throw new ArgumentOutOfRangeException(nameof(caching), caching, "Caching mode must be WriteBack, WriteCombined or Uncached.");
    }
}
