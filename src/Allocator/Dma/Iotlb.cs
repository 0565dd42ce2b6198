namespace PagePool.Dma;

/// <summary>
/// The IOTLB in front of a domain's IO page table: a direct-mapped cache of 256 translations, filled by walks and
/// emptied only by invalidation. Nothing else removes an entry: after an unmap without invalidation (deferred
/// flush) the device still reaches the old page through it, exactly the window real hardware has.
/// </summary>
internal sealed class Iotlb
{
    private const int Size = 256;
    private readonly ulong[] _tag = new ulong[Size];    // pfn + 1; 0 = empty
    private readonly ulong[] _pte = new ulong[Size];
    private readonly ulong[] _host = new ulong[Size];
    private readonly ulong[] _block = new ulong[Size];
    private readonly ulong[] _epochOf = new ulong[Size]; // the flush epoch an entry was filled in
    private readonly Lock _lock = new();
    private ulong _epoch = 1; // a full flush starts a new one: every older entry is gone at once
    private long _invalidations;

    internal long Invalidations => Volatile.Read(ref _invalidations);

    internal bool TryLookup(ulong pfn, out ulong pte, out ulong host, out ulong block)
    {
        int i = (int)(pfn & (Size - 1));
        lock (_lock)
        {
            if (_tag[i] == pfn + 1 && _epochOf[i] == _epoch)
            {
                pte = _pte[i]; host = _host[i]; block = _block[i];
                return true;
            }
        }
        pte = host = block = 0;
        return false;
    }

    internal void Fill(ulong pfn, ulong pte, ulong host, ulong block)
    {
        int i = (int)(pfn & (Size - 1));
        lock (_lock)
        {
            _tag[i] = pfn + 1; _pte[i] = pte; _host[i] = host; _block[i] = block; _epochOf[i] = _epoch;
        }
    }

    /// <summary>Invalidate the translations of a range of pfns (a strict unmap's iotlb_sync).</summary>
    internal void Invalidate(ulong pfn, ulong pages)
    {
        lock (_lock)
        {
            for (ulong p = pfn; p < pfn + pages; p++)
            {
                int i = (int)(p & (Size - 1));
                if (_tag[i] == p + 1) _tag[i] = 0; // whatever its epoch: an old entry no longer matches anyway
            }
            _invalidations++;
        }
    }

    /// <summary>
    /// Invalidate everything (flush_iotlb_all, what a flush queue does): a new epoch, in which no entry filled before
    /// matches. Clearing the 2 KiB of tags instead made every flush of a CPU take those 32 lines from the CPU that
    /// flushed last: with two threads unmapping on one device, a flush each 250 unmaps per CPU.
    /// </summary>
    internal void InvalidateAll()
    {
        lock (_lock)
        {
            _epoch++;
            _invalidations++;
        }
    }
}
