namespace PagePool.Dma;

/// <summary>Which way data moves through a streaming mapping (Linux enum dma_data_direction, same values).</summary>
public enum DmaDirection
{
    /// <summary>Both ways: the device reads what the CPU wrote and writes what the CPU will read.</summary>
    Bidirectional = 0,
    /// <summary>The device only reads: the CPU filled the buffer before mapping.</summary>
    ToDevice = 1,
    /// <summary>The device only writes: the CPU reads the buffer after unmapping or syncing for the CPU.</summary>
    FromDevice = 2,
}
