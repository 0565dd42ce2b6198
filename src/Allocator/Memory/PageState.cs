using System.Runtime.CompilerServices;

namespace PagePool.Memory;

/// <summary>Who holds a block: the system (free), a pool (pooled) or a caller (allocated).</summary>
internal enum PageState : byte { Free = 0, Pooled = 1, Allocated = 2 }

/// <summary>
/// The per-block metadata word, one ulong per page in native memory, changed only by compare-and-swap so that
/// a double free or a race on one handle is detected rather than corrupting anything.
/// Layout, low to high: state (2 bits) | caching (2) | order (4) | owner pool id (16) | generation (40).
/// Only the head page of a block carries meaning; the generation keeps counting for the life of the process,
/// across arena unmaps, so a handle from an earlier life of the page never matches again.
/// </summary>
internal static class PageMeta
{
    private const int CachingShift = 2, OrderShift = 4, OwnerShift = 8, GenerationShift = 24;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PageState State(ulong w) => (PageState)(w & 3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static CachingMode Caching(ulong w) => (CachingMode)((w >> CachingShift) & 3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Order(ulong w) => (int)(w >> OrderShift) & 15;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Owner(ulong w) => (int)(w >> OwnerShift) & 0xFFFF;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Generation(ulong w) => w >> GenerationShift;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Make(PageState state, CachingMode caching, int order, int owner, ulong generation)
        => (ulong)state | ((ulong)caching << CachingShift) | ((ulong)order << OrderShift)
           | ((ulong)owner << OwnerShift) | (generation << GenerationShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong WithState(ulong w, PageState state) => (w & ~3UL) | (ulong)state;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong WithCaching(ulong w, CachingMode c) => (w & ~(3UL << CachingShift)) | ((ulong)c << CachingShift);

    /// <summary>Change only the caching field, atomically with respect to concurrent compare-and-swaps.</summary>
    internal static unsafe void SetCaching(ulong* m, CachingMode c)
    {
        ulong w;
        do w = Volatile.Read(ref *m);
        while (Interlocked.CompareExchange(ref *m, WithCaching(w, c), w) != w);
    }

    /// <summary>The word with its generation advanced by one: every handle naming the old one goes stale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong NextGeneration(ulong w) => w + (1UL << GenerationShift);
}
