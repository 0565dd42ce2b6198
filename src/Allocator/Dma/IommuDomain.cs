namespace PagePool.Dma;

/// <summary>
/// One IOMMU domain: the IO page table a device's IOMMU walks, its IOTLB, its IOVA space and, with deferred
/// invalidation, its flush queue. Each device gets its own domain, so no device can reach another's pages.
/// </summary>
/// <remarks>
/// Teardown frees nothing a call still running on another thread can use. A map, unmap, sync or device access that
/// passed its device's disposed check before <see cref="DmaDevice.Dispose"/> marked it goes on to the end in this
/// domain: its IOVA comes from the caches, its entries go into the table, its unmap queues or invalidates. What it
/// leaves behind (a mapping, a queued IOVA) is in a domain nothing will use again. All of that memory lives until
/// the GC finds the domain unreachable: the IOTLB's lines, the flush queue's entries and the IOVA caches' rooms are
/// pinned arrays, and the page table's native tables are freed by its finalizer. The rule that makes "unreachable"
/// mean "no call inside": every method of <see cref="IommuOps"/> keeps the ops, which hold the domain, reachable until
/// its last access to the domain (by a later use of a field, or GC.KeepAlive(this), which compiles to no instruction),
/// since a raw pointer into a table or a pinned array does not keep its owner alive. Dispose itself stops the flush queue's timer (waiting for a tick
/// in progress) and retires the table.
/// </remarks>
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

    /// <summary>The device is released: stop the timer and retire the table (see the remarks: nothing is freed here).</summary>
    public void Dispose()
    {
        Queue?.Dispose();
        Table.Retire();
    }
}
