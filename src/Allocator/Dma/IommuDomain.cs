namespace PagePool.Dma;

/// <summary>
/// One IOMMU domain: the IO page table a device's IOMMU walks, its IOTLB, its IOVA space and, with deferred
/// invalidation, its flush queue. Each device gets its own domain, so no device can reach another's pages.
/// </summary>
internal sealed class IommuDomain : IDisposable
{
    internal readonly IoPageTable Table = new();
    internal readonly Iotlb Iotlb;
    internal readonly IovaAllocator Iova;
    internal readonly FlushQueue? Queue;

    internal IommuDomain(DmaPlatformOptions options, int cpus)
    {
        Iotlb = new Iotlb(cpus);
        Iova = new IovaAllocator(1, cpus); // IOVA page 0 is never handed out: address 0 stays a bug
        if (options.DeferredFlush) Queue = new FlushQueue(this, cpus, options.FlushQueueEntries, options.FlushTimeout);
    }

    public void Dispose()
    {
        Queue?.Dispose();
        Table.Dispose();
    }
}
