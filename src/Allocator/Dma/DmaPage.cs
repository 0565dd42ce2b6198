using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>A block a device can reach, with the DMA address it keeps for as long as it is in use.</summary>
/// <param name="Block">The block the CPU uses.</param>
/// <param name="DmaAddress">Where the device reaches its first byte.</param>
/// <param name="Caching">The caching mode it was asked for, which names the pool type it goes back to.</param>
public readonly record struct DmaPage(PageHandle Block, ulong DmaAddress, CachingMode Caching);
