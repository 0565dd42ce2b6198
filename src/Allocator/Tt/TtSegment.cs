using PagePool.Memory;

namespace PagePool.Tt;

/// <summary>
/// One block of a page array, as the first populate laid it out: resident (its blocks held from the pool) or backed
/// up (an extent of the swap store). Partial backup and resumable restore work segment by segment, so each segment is
/// always wholly one or the other.
/// </summary>
internal sealed class TtSegment(int firstPage, int pages)
{
    internal readonly int FirstPage = firstPage;
    internal readonly int Pages = pages;
    /// <summary>The blocks holding the pages while resident (one, or a few when a restore got smaller orders); else null.</summary>
    internal PageHandle[]? Blocks;
    /// <summary>The store offset while backed up; -1 while resident.</summary>
    internal long SwapOffset = -1;

    internal bool Resident => Blocks is not null;
    internal long Bytes => (long)Pages << PhysicalMemory.PageShift;
}
