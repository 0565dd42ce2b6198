namespace PagePool.Tt;

/// <summary>
/// Something a <see cref="PageArray"/> binds to: a device that reaches the pages through DMA addresses. The DMA
/// layer's devices implement it; the array only needs the highest address the device can reach (its DMA mask) and
/// a DMA address per page while bound.
/// </summary>
public interface ITtBindTarget
{
    /// <summary>A short name for messages ("gpu0").</summary>
    string Name { get; }

    /// <summary>The highest physical address the target can reach (0xFFFF_FFFF for a 32-bit device).</summary>
    ulong AddressLimit { get; }

    /// <summary>
    /// Map pages for the device: <paramref name="physicalAddresses"/> holds one address per 4 KiB page; write the
    /// device's DMA address of each into <paramref name="dmaAddresses"/>. Throw to refuse; nothing is bound then.
    /// </summary>
    void Bind(ReadOnlySpan<ulong> physicalAddresses, Span<ulong> dmaAddresses);

    /// <summary>Undo <see cref="Bind"/> for the DMA addresses it returned.</summary>
    void Unbind(ReadOnlySpan<ulong> dmaAddresses);
}
