using System.Numerics;
using System.Runtime.CompilerServices;

namespace PagePool.Dma;

/// <summary>
/// The IOTLB in front of a domain's IO page table: a direct-mapped cache of 256 translations, filled by walks and
/// emptied only by invalidation. Nothing else removes an entry: after an unmap without invalidation (deferred
/// flush) the device still reaches the old page through it, exactly the window real hardware has.
/// </summary>
/// <remarks>
/// <para>Each entry is one cache line of a pinned array guarded by its own sequence word (a seqlock): a lookup reads
/// the entry between two reads of the word and retries if a writer was inside; a fill or an invalidation makes the
/// word odd by compare-and-swap, writes, and makes it even again. Different translations never share a line or a
/// lock, so mappers on different CPUs do not serialise on the IOTLB: strict unmaps used to take one domain-wide lock
/// each, and two CPUs unmapping through one domain ran at a third of one CPU's rate (measured side by side on an AMD
/// EPYC host).</para>
/// <para>An invalidation that finds no entry for its page (and no writer inside its slot) writes nothing. The walk
/// that fills an entry happens before the fill, outside any lock, as on hardware: a fill racing with an unmap of the
/// same page can leave a stale entry that a strict invalidation already passed, the window a driver that unmaps
/// memory under in-flight DMA opens on real hardware too (the checker reports device accesses through it).</para>
/// </remarks>
internal sealed unsafe class Iotlb
{
    private const int Size = 256;
    private const int Stride = 8; // ulongs an entry: one 64-byte line
    private const int CountStride = 16; // longs between two CPUs' flush counters: 128 bytes
    private const int Seq = 0, Tag = 1, Pte = 2, Host = 3, Block = 4, Epoch = 5; // Tag: pfn + 1, 0 = empty

    private readonly PagePrivate _lines = new(Size * Stride); // page-aligned, so each entry is one whole line
    // A full flush starts a new epoch: every entry filled before it is gone at once. The epoch is the sum of one
    // counter per CPU, each on a 128-byte line of its own, so CPUs flushing their queues never write one line
    // between them (one shared counter moved to the flushing CPU on every flush, and was read there by the other).
    private readonly long[] _flushCounts;
    private readonly int _cpuMask;

    internal Iotlb(int cpus)
    {
        int slots = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, cpus));
        _cpuMask = slots - 1;
        _flushCounts = new long[(slots + 1) * CountStride];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong* Entry(ulong pfn) => _lines.Start + (int)(pfn & (Size - 1)) * Stride;

    internal bool TryLookup(ulong pfn, out ulong pte, out ulong host, out ulong block)
    {
        ulong* e = Entry(pfn);
        var spin = new SpinWait();
        while (true)
        {
            ulong s = Volatile.Read(ref e[Seq]);
            if ((s & 1) == 0)
            {
                // Volatile reads keep the second read of the word after the entry's fields.
                bool hit = Volatile.Read(ref e[Tag]) == pfn + 1 && Volatile.Read(ref e[Epoch]) == CurrentEpoch();
                pte = Volatile.Read(ref e[Pte]);
                host = Volatile.Read(ref e[Host]);
                block = Volatile.Read(ref e[Block]);
                if (Volatile.Read(ref e[Seq]) == s)
                {
                    if (hit) return true;
                    pte = host = block = 0;
                    return false;
                }
            }
            spin.SpinOnce();
        }
    }

    internal void Fill(ulong pfn, ulong pte, ulong host, ulong block)
    {
        ulong* e = Entry(pfn);
        ulong s = Enter(e);
        e[Tag] = pfn + 1;
        e[Pte] = pte;
        e[Host] = host;
        e[Block] = block;
        e[Epoch] = CurrentEpoch();
        Volatile.Write(ref e[Seq], s + 2);
    }

    /// <summary>
    /// Drop the entries of <paramref name="pages"/> pages from <paramref name="pfn"/> (a strict unmap). A slot that
    /// holds another page, and has no writer inside, is left untouched: nothing is written to its line.
    /// </summary>
    internal void Invalidate(ulong pfn, ulong pages)
    {
        for (ulong p = pfn; p < pfn + pages; p++)
        {
            ulong* e = Entry(p);
            if (Volatile.Read(ref e[Tag]) != p + 1 && (Volatile.Read(ref e[Seq]) & 1) == 0)
                continue; // no entry for this page and no writer inside: nothing to drop, nothing written
            ulong s = Enter(e);
            if (e[Tag] == p + 1) e[Tag] = 0; // whatever its epoch: an old entry no longer matches anyway
            Volatile.Write(ref e[Seq], s + 2);
        }
    }

    /// <summary>
    /// Drop every entry at once (a flush-queue flush, by the queue of <paramref name="cpu"/>): entries filled before
    /// now no longer match. One increment of that CPU's counter, not 256 tag writes: a flush would otherwise pull
    /// every line of the table to the flushing CPU.
    /// </summary>
    internal void InvalidateAll(int cpu) => Interlocked.Increment(ref _flushCounts[((cpu & _cpuMask) + 1) * CountStride]);

    /// <summary>Full flushes so far, counted on every CPU (the flush queue's flush count).</summary>
    internal long FullFlushes
    {
        get
        {
            long sum = 0;
            for (int c = 0; c <= _cpuMask; c++) sum += Volatile.Read(ref _flushCounts[(c + 1) * CountStride]);
            return sum;
        }
    }

    // One more than the full flushes: it only grows, so an entry filled before any flush never matches again, and
    // an empty entry (0) never matches.
    private ulong CurrentEpoch() => (ulong)FullFlushes + 1;

    // Make the entry's word odd (this writer inside); returns the even value it had.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Enter(ulong* e)
    {
        var spin = new SpinWait();
        while (true)
        {
            ulong s = Volatile.Read(ref e[Seq]);
            if ((s & 1) == 0 && Interlocked.CompareExchange(ref e[Seq], s + 1, s) == s) return s;
            spin.SpinOnce();
        }
    }
}
