namespace PagePool.Memory;

/// <summary>The emulated physical zone a page lives in.</summary>
public enum Zone : byte
{
    /// <summary>Frames below 4 GiB, reachable by 32-bit DMA devices (GFP_DMA32). Limited in size.</summary>
    Dma32 = 0,
    /// <summary>Frames at or above 4 GiB.</summary>
    Normal = 1,
}
