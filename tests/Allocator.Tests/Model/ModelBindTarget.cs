using System.Reflection;
using PagePool.Dma;
using PagePool.Memory;
using PagePool.Tt;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// Binds page arrays to a real <see cref="DmaDevice"/>: every block of the array is mapped with MapPage
/// (bidirectional), so the device's engine reaches the array's pages only through the DMA addresses the array hands
/// out, and loses them at unbind. The array passes only physical addresses; the blocks behind them are read from the
/// array being bound (<see cref="Binding"/>), and each page's address is checked against its block.
/// </summary>
/// <remarks>
/// <see cref="ITtBindTarget"/> carries physical addresses and the DMA API maps blocks, so this adapter reads the
/// array's blocks itself. When the arrays bind to a DmaDevice directly, the model should use that instead.
/// </remarks>
public sealed class ModelBindTarget(DmaDevice device) : ITtBindTarget
{
    private static readonly FieldInfo Segments = typeof(PageArray).GetField("_segments", BindingFlags.NonPublic | BindingFlags.Instance)
        ?? throw new InvalidOperationException("PageArray no longer keeps its blocks in _segments: update the model's bind target.");

    private readonly Dictionary<ulong, List<(ulong Dma, int Size)>> _bound = new();

    public DmaDevice Device => device;

    /// <summary>The array whose Bind is running (the model is single-threaded).</summary>
    public PageArray? Binding { get; set; }

    public string Name => device.Name;

    /// <summary>A direct device reaches up to its mask; behind an IOMMU every page is reachable.</summary>
    public ulong AddressLimit => device.OpsKind == DmaOpsKind.Iommu ? ulong.MaxValue : device.Mask;

    /// <summary>The DMA ranges (one per block) the array bound with first address <paramref name="firstDma"/> holds.</summary>
    public IReadOnlyList<(ulong Dma, int Size)> RangesOf(ulong firstDma) => _bound[firstDma];

    public void Bind(ReadOnlySpan<ulong> physicalAddresses, Span<ulong> dmaAddresses)
    {
        var array = Binding ?? throw new InvalidOperationException("Bind outside the model's TtBind step.");
        var memory = device.Platform.Memory;
        var ranges = new List<(ulong, int)>();
        int p = 0;
        try
        {
            foreach (var seg in (TtSegment[])Segments.GetValue(array)!)
                foreach (var block in seg.Blocks!)
                {
                    ulong physical = memory.PhysicalAddress(block);
                    int size = block.PageCount * PhysicalMemory.PageSize;
                    ulong dma = device.MapPage(block, 0, size, DmaDirection.Bidirectional);
                    if (device.MappingError(dma)) throw new InvalidOperationException($"{Name}: mapping error for {block}.");
                    ranges.Add((dma, size));
                    for (int k = 0; k < block.PageCount; k++, p++)
                    {
                        if (physicalAddresses[p] != physical + (ulong)k * PhysicalMemory.PageSize)
                            throw new InvalidOperationException($"{Name}: page {p} was passed as 0x{physicalAddresses[p]:x}, its block {block} is at 0x{physical:x}.");
                        dmaAddresses[p] = dma + (ulong)k * PhysicalMemory.PageSize;
                    }
                }
            if (p != physicalAddresses.Length) throw new InvalidOperationException($"{Name}: {physicalAddresses.Length} pages passed, the array's blocks hold {p}.");
        }
        catch
        {
            foreach (var (dma, size) in ranges) device.UnmapPage(dma, size, DmaDirection.Bidirectional);
            throw;
        }
        _bound.Add(dmaAddresses[0], ranges);
    }

    public void Unbind(ReadOnlySpan<ulong> dmaAddresses)
    {
        if (!_bound.Remove(dmaAddresses[0], out var ranges))
            throw new InvalidOperationException($"{Name}: unbind of 0x{dmaAddresses[0]:x}, which no bind returned.");
        foreach (var (dma, size) in ranges) device.UnmapPage(dma, size, DmaDirection.Bidirectional);
    }
}
