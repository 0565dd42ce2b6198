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
/// <para>Tables are installed by compare-and-swap, so mappers on different CPUs never lock; each leaf entry is written
/// only by the thread that owns its IOVA. Tables are kept until the domain goes, as Linux keeps them.</para>
/// <para>Only the finalizer frees them. A map, unmap, sync or device access that passed its device's disposed check
/// may still be walking them on another thread when the device is disposed, and nothing on those paths counts the
/// calls in flight (a count would put an atomic on every ~45 ns map). Such a call runs in a method of
/// <see cref="IommuOps"/> that keeps the ops, and so the domain and this table, reachable until its last access to
/// them (see <see cref="IommuDomain"/>): the GC finalizes the table only once no call can be inside it. Dispose
/// <see cref="Retire"/>s the table instead, telling the GC how much native memory that collection will give back.</para>
/// </remarks>
internal sealed unsafe class IoPageTable
{
    internal const ulong Read = 1, Write = 2;
    internal const int Levels = 4, IndexBits = 9, Entries = 1 << IndexBits;
    internal const ulong IovaLimitPfn = (1UL << (48 - 12)) - 1;
    // A leaf entry is a whole cache line: the pte hardware reads, then the host pointer, block handle and mapping
    // length. Neighbouring IOVAs are often mapped by different CPUs (their caches were filled from one tree);
    // packed 8 to a line they would bounce that line between cores on every map and unmap.
    private const int EntryStride = 8;

    private const int DirectoryUlongs = Entries, LeafUlongs = Entries * EntryStride;

    private readonly ulong* _root;
    private readonly List<nint> _tables = new();
    private readonly Lock _tablesLock = new();
    private long _bytes;    // native bytes in _tables (under the lock)
    private long _pressure; // bytes told to the GC at Retire, taken back by the finalizer

    internal IoPageTable() => _root = AllocTable(DirectoryUlongs);

    private ulong* AllocTable(int ulongs)
    {
        var t = (ulong*)NativeMemory.AlignedAlloc((nuint)ulongs * 8, 4096);
        NativeMemory.Clear(t, (nuint)ulongs * 8);
        lock (_tablesLock)
        {
            _tables.Add((nint)t);
            _bytes += ulongs * 8L;
        }
        return t;
    }

    /// <summary>
    /// The leaf table covering a pfn, and the entry's index in it; null when not populated and not asked to. The
    /// caller keeps this table reachable until its last access through the pointer (see the remarks).
    /// </summary>
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
        int ulongs = leaf ? LeafUlongs : DirectoryUlongs;
        var fresh = AllocTable(ulongs);
        ulong had = Interlocked.CompareExchange(ref table[i], (ulong)fresh, 0);
        if (had == 0) return (ulong)fresh;
        lock (_tablesLock) // another CPU installed it first: nobody else has seen this one
        {
            _tables.Remove((nint)fresh);
            _bytes -= ulongs * 8L;
        }
        NativeMemory.AlignedFree(fresh);
        return had;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Pte(ulong* leaf, int i) => ref leaf[i * EntryStride];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Host(ulong* leaf, int i) => ref leaf[i * EntryStride + 1];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Block(ulong* leaf, int i) => ref leaf[i * EntryStride + 2];
    [MethodImpl(MethodImplOptions.AggressiveInlining)] internal static ref ulong Length(ulong* leaf, int i) => ref leaf[i * EntryStride + 3];

    /// <summary>The leaf entry of a pfn (0 when nothing is mapped there). The caller keeps this table reachable until it returns.</summary>
    internal ulong Walk(ulong pfn, out ulong host, out ulong block)
    {
        var leaf = Leaf(pfn, false, out int i);
        if (leaf is null) { host = block = 0; return 0; }
        ulong pte = Volatile.Read(ref Pte(leaf, i));
        host = Host(leaf, i);
        block = Block(leaf, i);
        return pte;
    }

    /// <summary>Native bytes the tables hold.</summary>
    internal long Bytes
    {
        get { lock (_tablesLock) return _bytes; }
    }

    /// <summary>
    /// The domain is going: from now on the tables wait only for the GC to find them unreachable (calls may still be
    /// inside them). Tell it how much native memory that collection gives back, so it comes sooner when retired
    /// tables add up. Tables a late call populates after this are freed too, without being told.
    /// </summary>
    internal void Retire()
    {
        long bytes = Bytes;
        if (bytes > 0 && Interlocked.CompareExchange(ref _pressure, bytes, 0) == 0) GC.AddMemoryPressure(bytes);
    }

    // Runs when nothing can reach the table, so no call can be walking it (see the remarks).
    ~IoPageTable()
    {
        foreach (var t in _tables) NativeMemory.AlignedFree((void*)t);
        if (_pressure > 0) GC.RemoveMemoryPressure(_pressure);
    }
}
