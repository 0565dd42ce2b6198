using System.Runtime.CompilerServices;
using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Dma;

/// <summary>
/// A device's dma_map_ops: how its streaming and coherent mappings are made, synced and undone, and how the
/// device's own accesses are translated. Cache maintenance for non-coherent devices is not an ops concern of its
/// own: every kind calls <see cref="SyncForDeviceCaches"/> and <see cref="SyncForCpuCaches"/> on the memory the
/// device really touches (the arch_sync_dma_for_device / _for_cpu hooks).
/// </summary>
internal abstract unsafe class DmaOps(DmaDevice device) : IDisposable
{
    protected readonly DmaDevice Device = device;

    /// <summary>Map <paramref name="size"/> bytes at <paramref name="cpu"/> (block <paramref name="block"/>, page frame <paramref name="frame"/> of the first byte's page).</summary>
    internal abstract ulong Map(PageHandle block, byte* cpu, ulong frame, int offset, int size, DmaDirection dir, CachingMode caching, out bool bounced);

    /// <summary>Undo a streaming mapping; throws <see cref="DmaMappingException"/> without changing anything when it does not match one.</summary>
    internal abstract void Unmap(ulong dma, int size, DmaDirection dir);

    /// <summary>Sync a range of a streaming mapping for the CPU or for the device.</summary>
    internal abstract void Sync(ulong dma, int size, DmaDirection dir, bool forCpu);

    /// <summary>Make a held block reachable by the device as coherent memory; returns its DMA address.</summary>
    internal abstract ulong MapCoherent(PageHandle block, byte* cpu, ulong frame);

    /// <summary>Undo <see cref="MapCoherent"/>.</summary>
    internal abstract void UnmapCoherent(ulong dma, PageHandle block);

    /// <summary>
    /// Translate a device access: the host pointer for <paramref name="dma"/> and how many bytes from it the
    /// device may touch in one go. False with a reason when the access faults. <paramref name="stale"/> is set when
    /// the translation came from an IOTLB entry whose mapping is gone.
    /// </summary>
    internal abstract bool Translate(ulong dma, bool write, out byte* host, out int room, out bool stale, out string? fault);

    /// <summary>True when the ops never bounce, so streaming syncs are only cache maintenance.</summary>
    internal abstract bool NeverBounces { get; }

    public virtual void Dispose() { }

    // Clean (TO_DEVICE, BIDIR) or invalidate (FROM_DEVICE) the lines the device is about to use. On x86 both are clflush.
    // Inline: a coherent device (the usual case) pays one test on every map, sync and unmap.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected void SyncForDeviceCaches(byte* p, int size, DmaDirection dir)
    {
        if (!Device.IsCoherent) FlushLines(p, size);
    }

    // Invalidate what the device may have written, so the CPU does not read old lines (FROM_DEVICE, BIDIR).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected void SyncForCpuCaches(byte* p, int size, DmaDirection dir)
    {
        if (!Device.IsCoherent && dir != DmaDirection.ToDevice) FlushLines(p, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FlushLines(byte* p, int size)
    {
        Shim.Flush(p, (nuint)size);
        Interlocked.Increment(ref Device.CacheMaintenanceCount);
    }

    // Is the block a device access reaches still held by someone? A freed page's arena may be gone: never touch it.
    protected bool IsLive(PageHandle block) => Device.Platform.Memory.IsLive(block.Value);
}
