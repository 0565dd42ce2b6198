using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>
/// A scatterlist: byte ranges of blocks the CPU fills in, and after <see cref="DmaDevice.MapScatterlist"/> the DMA
/// segments the device uses, adjacent entries merged when their DMA addresses are contiguous and the merged segment
/// stays within the device's max segment size and does not cross its segment boundary.
/// </summary>
public sealed unsafe class DmaScatterlist
{
    private readonly List<(PageHandle Block, int Offset, int Length)> _entries = new();
    private (nint Cpu, ulong Frame, CachingMode Caching)[] _resolved = [];
    private readonly List<(ulong Dma, int Length)> _segments = new();
    internal ulong[] EntryDma = [];
    internal ulong IovaPages;
    internal DmaDevice? MappedBy;
    internal DmaDirection MappedDirection;

    /// <summary>Append a byte range of a held block. Not while the list is mapped.</summary>
    public DmaScatterlist Add(PageHandle block, int offset, int length)
    {
        if (MappedBy is not null)
            throw new InvalidOperationException($"The scatterlist is mapped for device '{MappedBy.Name}'; unmap it before changing it.");
        if (length <= 0)
            throw new ArgumentOutOfRangeException(nameof(length), length, "A scatterlist entry needs at least one byte.");
        if (offset < 0 || offset > (block.PageCount << PhysicalMemory.PageShift) - length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"The range [{offset}, {offset}+{length}) is outside the block of {block.PageCount << PhysicalMemory.PageShift} bytes.");
        _entries.Add((block, offset, length));
        return this;
    }

    /// <summary>Entries the CPU added (the nents to pass to map and unmap).</summary>
    public int Count => _entries.Count;

    /// <summary>Entry <paramref name="i"/> as added.</summary>
    public (PageHandle Block, int Offset, int Length) this[int i] => _entries[i];

    /// <summary>DMA segments after mapping (0 while unmapped).</summary>
    public int MappedCount => _segments.Count;

    /// <summary>The DMA address of mapped segment <paramref name="i"/> (sg_dma_address).</summary>
    public ulong DmaAddress(int i) => _segments[i].Dma;

    /// <summary>The length of mapped segment <paramref name="i"/> (sg_dma_len).</summary>
    public int DmaLength(int i) => _segments[i].Length;

    /// <summary>Every page of the mapped segments, in order.</summary>
    public DmaPageIterator DmaPages() => new(this);

    internal ulong PageSpan(int e) => (ulong)((_entries[e].Offset & (PhysicalMemory.PageSize - 1)) + _entries[e].Length + PhysicalMemory.PageSize - 1) >> PhysicalMemory.PageShift;

    internal void Resolved(int e, out PageHandle block, out byte* cpu, out ulong frame, out int offset, out int length)
    {
        (block, offset, length) = _entries[e];
        cpu = (byte*)_resolved[e].Cpu;
        frame = _resolved[e].Frame;
    }

    internal CachingMode CachingOf(int e) => _resolved[e].Caching;

    internal void Resolve(PhysicalMemory memory)
    {
        var r = new (nint, ulong, CachingMode)[_entries.Count];
        for (int e = 0; e < _entries.Count; e++)
        {
            var (block, offset, _) = _entries[e];
            fixed (byte* p = memory.GetSpan(block))
                r[e] = ((nint)(p + offset), memory.FrameOf(block) + (ulong)(offset >> PhysicalMemory.PageShift), memory.CachingOf(block));
        }
        _resolved = r;
    }

    // __finalise_sg: merge entries whose DMA ranges touch, within the device's segment limits.
    internal void SetMapped(DmaDevice device, DmaDirection dir, ulong[] entryDma)
    {
        _segments.Clear();
        for (int e = 0; e < _entries.Count; e++)
        {
            ulong dma = entryDma[e];
            int len = _entries[e].Length;
            if (_segments.Count > 0)
            {
                var (sd, sl) = _segments[^1];
                ulong last = sd + (ulong)sl + (ulong)len - 1;
                if (sd + (ulong)sl == dma && sl + len <= device.MaxSegmentSize && (sd & ~device.SegmentBoundaryMask) == (last & ~device.SegmentBoundaryMask))
                {
                    _segments[^1] = (sd, sl + len);
                    continue;
                }
            }
            _segments.Add((dma, len));
        }
        EntryDma = entryDma;
        MappedBy = device;
        MappedDirection = dir;
    }

    internal void ClearMapped()
    {
        _segments.Clear();
        EntryDma = [];
        IovaPages = 0;
        MappedBy = null;
    }

    internal long TotalBytes
    {
        get
        {
            long n = 0;
            foreach (var e in _entries) n += e.Length;
            return n;
        }
    }
}
