namespace PagePool.Dma;

/// <summary>One finding of the checker: the class, the device, the DMA address, the size and direction, and a sentence.</summary>
/// <param name="Class">What was wrong.</param>
/// <param name="Device">The device's name.</param>
/// <param name="Address">The DMA address concerned.</param>
/// <param name="Size">Bytes concerned.</param>
/// <param name="Direction">The direction the caller gave (or the mapping's, when the caller gave none).</param>
/// <param name="Message">What happened and what to fix.</param>
public sealed record DmaCheckReport(DmaCheckClass Class, string Device, ulong Address, long Size, DmaDirection Direction, string Message)
{
    /// <summary>One line for logs.</summary>
    public override string ToString() =>
        $"dma-check {Class}: device '{Device}' address 0x{Address:x} size {Size} {Direction}: {Message}";
}
