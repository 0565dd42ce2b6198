namespace PagePool.Dma;

/// <summary>One DMA fault: which device, where, which way, and why.</summary>
/// <param name="Device">The device's name.</param>
/// <param name="Address">The DMA address the device used.</param>
/// <param name="Write">True for a device write, false for a read.</param>
/// <param name="Reason">What the translation found.</param>
public readonly record struct DmaFault(string Device, ulong Address, bool Write, string Reason)
{
    /// <summary>A sentence for logs.</summary>
    public override string ToString() =>
        $"DMA fault: device '{Device}' {(Write ? "wrote" : "read")} DMA address 0x{Address:x}: {Reason}.";
}
