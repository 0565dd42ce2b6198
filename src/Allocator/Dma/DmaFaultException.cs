namespace PagePool.Dma;

/// <summary>
/// A device touched a DMA address it has no mapping for, or wrote through a read-only one: the IOMMU fault (or,
/// without an IOMMU, the bus error) a real device would cause. Recorded and counted on the device before it is raised.
/// </summary>
public sealed class DmaFaultException : PagePoolException
{
    /// <summary>The faulting access.</summary>
    public DmaFault Fault { get; }

    internal DmaFaultException(DmaFault fault) : base(fault.ToString()) => Fault = fault;
}
