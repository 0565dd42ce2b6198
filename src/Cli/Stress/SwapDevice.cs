using PagePool.Tt;

namespace PagePool.Cli.Stress;

/// <summary>
/// A device the swap scenario binds buffers to: it reaches addresses up to its limit and sees each page at its
/// physical address (direct mapping, no IOMMU). Counts the pages it has bound so leaks show in the summary.
/// </summary>
internal sealed class SwapDevice(string name, ulong limit) : ITtBindTarget
{
    private long _boundPages;

    public string Name => name;
    public ulong AddressLimit => limit;
    internal long BoundPages => Volatile.Read(ref _boundPages);

    public void Bind(ReadOnlySpan<ulong> physicalAddresses, Span<ulong> dmaAddresses)
    {
        physicalAddresses.CopyTo(dmaAddresses);
        Interlocked.Add(ref _boundPages, physicalAddresses.Length);
    }

    public void Unbind(ReadOnlySpan<ulong> dmaAddresses) => Interlocked.Add(ref _boundPages, -dmaAddresses.Length);
}
