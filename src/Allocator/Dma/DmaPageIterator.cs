namespace PagePool.Dma;

/// <summary>
/// The DMA address of every page of a mapped scatterlist, segment after segment (for_each_sg_dma_page): what a GPU
/// driver writes into its page tables.
/// </summary>
public struct DmaPageIterator
{
    private readonly DmaScatterlist _list;
    private int _segment;
    private ulong _next, _end;

    internal DmaPageIterator(DmaScatterlist list)
    {
        _list = list;
        _segment = -1;
        _next = _end = 0;
        Current = 0;
    }

    /// <summary>The DMA address of the current page (page aligned).</summary>
    public ulong Current { get; private set; }

    /// <summary>Step to the next page; false after the last one.</summary>
    public bool MoveNext()
    {
        while (_next >= _end)
        {
            if (++_segment >= _list.MappedCount) return false;
            ulong dma = _list.DmaAddress(_segment);
            _next = dma & ~0xFFFUL;
            _end = dma + (ulong)_list.DmaLength(_segment);
        }
        Current = _next;
        _next += 0x1000;
        return true;
    }

    /// <summary>For foreach.</summary>
    public readonly DmaPageIterator GetEnumerator() => this;
}
