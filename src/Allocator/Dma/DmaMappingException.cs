namespace PagePool.Dma;

/// <summary>
/// A DMA API call could not be done for a device: memory it cannot address, a range outside the block, an address
/// it never mapped. Raised before anything changes: the device's mappings are as they were.
/// </summary>
public class DmaMappingException : PagePoolException
{
    /// <summary>The device's name.</summary>
    public string Device { get; }

    /// <summary>The DMA or physical address concerned (0 when none).</summary>
    public ulong Address { get; }

    internal DmaMappingException(string device, ulong address, string message) : base(message)
    {
        Device = device;
        Address = address;
    }
}
