using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PagePool.Dma;

/// <summary>
/// A four-level IO page table in native memory, walked as hardware walks it (x86 second-level / ARM SMMU stage 1
/// shape): 48-bit IOVAs, 9 index bits per level, 4 KiB pages. Directory entries point at the next table; a leaf
/// entry holds the page's physical address and its read/write permission bits.
/// </summary>
/// <remarks>
/// Leaf entries carry, beside the 8-byte entry hardware reads, what the simulation needs and hardware does not: the
/// host pointer of the page's memory (the emulated bus resolves the physical address through it), the raw handle of
/// the block the page belongs to (so a device access to a page its driver already freed is caught, not a crash), and
/// on the first page of each mapping its length in pages (so an unmap of the wrong size is refused, not obeyed).
/// Tables are installed by compare-and-swap, so mappers on different CPUs never lock; each leaf entry is written only by
/// the thread that owns its IOVA. Tables are freed with the domain, as Linux keeps them until the domain goes.
/// </remarks>
internal sealed unsafe class IoPageTable : IDisposable
{
    internal const ulong Read = 1, Write = 2;
    internal const int Levels = 4, IndexBits = 9, Entries = 1 << IndexBits;
    internal const ulong IovaLimitPfn = (1UL << (48 - 12)) - 1;
    // A leaf entry is a whole cache line: the pte hardware reads, then the host pointer, block handle and mapping
    // length. Neighbouring IOVAs are often mapped by different CPUs (their caches were filled from one tree);
    // packed 8 to a line they would bounce that line between cores on every map and unmap.
    private const int EntryStride = 8;

    private readonly ulong* _root;
    private readonly List<nint> _tables = new();
    private readonly Lock _tablesLock = new();

    internal IoPageTable() => _root = AllocTable(Entries);

    private ulong* AllocTable(int ulongs)
    {
        var t = (ulong*)NativeMemory.AlignedAlloc((nuint)ulongs * 8, 4096);
        NativeMemory.Clear(t, (nuint)ulongs * 8);
        lock (_tablesLock) _tables.Add((nint)t);
        return t;
    }

    /// <summary>The leaf table covering a pfn, and the entry's index in it; null when not populated and not asked to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong* Leaf(ulong pfn, bool populate, out int index)
    {
        ulong* table = _root;
        for (int level = Levels - 1; level > 0; level--)
        {
            int i = (int)(pfn >> (level * IndexBits)) & (Entries - 1);
            ulong next = Volatile.Read(ref table[i]);
            if (next == 0)
            {
                if (!populate) { index = 0; return null; }
                next = Populate(table, i, level == 1);
            }
            table = (ulong*)next;
        }
        index = (int)pfn & (Entries - 1);
        return table;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong Populate(ulong* table, int i, bool leaf)
    {
        var fresh = AllocTable(leaf ? Entries * EntryStride : Entries);
        ulong had = Interlocked.CompareExchange(ref table[i], (ulong)fresh, 0);
        if (had == 0) return (ulong)fresh;
        lock (_tablesLock) _tables.Remove((nint)fresh); // another CPU installed it first
        NativeMemory.AlignedFree(fresh);
        return had;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Pte(ulong* leaf, int i) => ref leaf[i * EntryStride];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Host(ulong* leaf, int i) => ref leaf[i * EntryStride + 1];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Block(ulong* leaf, int i) => ref leaf[i * EntryStride + 2];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Length(ulong* leaf, int i) => ref leaf[i * EntryStride + 3];

    /// <summary>The leaf entry of a pfn (0 when nothing is mapped there).</summary>
    internal ulong Walk(ulong pfn, out ulong host, out ulong block)
    {
        var leaf = Leaf(pfn, false, out int i);
        if (leaf is null) { host = block = 0; return 0; }
        ulong pte = Volatile.Read(ref Pte(leaf, i));
        host = Host(leaf, i);
        block = Block(leaf, i);
        return pte;
    }

    public void Dispose()
    {
        lock (_tablesLock)
        {
            foreach (var t in _tables) NativeMemory.AlignedFree((void*)t);
            _tables.Clear();
        }
    }
}
