using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace PagePool.Memory;

/// <summary>
/// The per-block metadata word, one ulong per page in native memory.
/// Layout, low to high: state (2 bits) | caching (2) | order (4) | owner pool id (16) | generation (40).
/// Only the head page of a block carries meaning; the generation keeps counting for the life of the memory space,
/// across arena unmaps, so a handle from an earlier life of the page never matches again.
/// </summary>
/// <remarks>
/// How the word changes, exactly:
/// <list type="bullet">
/// <item>Compare-and-swap wherever two threads may race on one word: a release (Allocated -> Pooled, by the pool,
/// generation advanced), taking a block for a caching change or a free (Allocated or Pooled -> Busy), and the
/// caching field while a transition runs. A lost CAS is a typed error for the caller; nothing is half done.</item>
/// <item>A plain (volatile) store by the one thread that holds the block exclusively: Free -> Allocated when the
/// buddy allocator hands a block out under the zone lock, Pooled -> Allocated when a pool's taker popped the block
/// from a magazine it alone holds, Busy -> Allocated or Free at the end of a change, and the undo of a Busy that
/// could not take every block of a batch. No other thread can hold a handle that passes the checks meanwhile:
/// the state or the generation differs from anything it could present.</item>
/// </list>
/// </remarks>
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
    {
        // No check of the caching here: a pool builds the word it expects from what a caller passed, and a
        // mismatch with the real word is how it reports the caller's mistake.
        Debug.Assert((uint)order <= PhysicalMemory.MaxOrder && (uint)owner <= 0xFFFF);
        return (ulong)state | ((ulong)caching << CachingShift) | ((ulong)order << OrderShift)
               | ((ulong)owner << OwnerShift) | (generation << GenerationShift);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong WithState(ulong w, PageState state) => (w & ~3UL) | (ulong)state;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong WithCaching(ulong w, CachingMode c)
    {
        // An unchecked mode would spill into the order bits: every public entry validates before it gets here.
        Debug.Assert((uint)c <= (uint)CachingMode.Uncached);
        return (w & ~(3UL << CachingShift)) | ((ulong)c << CachingShift);
    }

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
