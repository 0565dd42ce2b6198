using System.Runtime.CompilerServices;

namespace PagePool.Pool;

/// <summary>
/// Pages sitting in the depots of all pool types of one pool, and what that means for the limit. Pool types add
/// to it as magazines enter and leave their depot (they report; they never decide); the pool reads it after a
/// release to decide whether to trim.
/// </summary>
/// <remarks>
/// The per-core magazines hold at most <c>magazinePages</c> pages in all (every slot, both magazines,
/// full). While depot + that bound fits under the limit the pool cannot be over it, whatever the magazines do, so
/// releases fill magazines freely. Past that point the pool is <see cref="Tight"/>: releases bypass the
/// magazines and go to the depot, where every page is counted, and the pool trims back to its limit.
/// </remarks>
internal sealed class DepotGauge(long limitPages, long magazinePages)
{
    private long _pages;

    /// <summary>The pool limit in pages.</summary>
    internal readonly long LimitPages = limitPages;

    private readonly long _tightAbove = limitPages - magazinePages;

    /// <summary>Pages in depots now.</summary>
    internal long Pages => Volatile.Read(ref _pages);

    /// <summary>Magazines could take the pool over its limit: releases go to the depot, counted.</summary>
    internal bool Tight
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _pages) > _tightAbove;
    }

    /// <summary>A pool type moved <paramref name="pages"/> pages into (positive) or out of (negative) its depot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Add(long pages) => Interlocked.Add(ref _pages, pages);
}
