using PagePool.Memory;

namespace PagePool.Dma;

/// <summary>Coherent DMA memory (dma_alloc_coherent's two results): the block the CPU uses and the address the device uses.</summary>
/// <param name="Block">The block, held by the caller until <see cref="DmaDevice.FreeCoherent"/>.</param>
/// <param name="DmaAddress">Where the device reaches the block's first byte.</param>
public readonly record struct DmaCoherentBlock(PageHandle Block, ulong DmaAddress);
