using PagePool.Dma;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// The devices every model run has, one per way a DMA address is made: a 64-bit device that snoops the caches, a
/// 32-bit non-coherent one (cache maintenance; 64-bit pages are out of its reach), one behind an IOMMU (page
/// permissions by direction), and one that bounces every mapping through swiotlb. Page arrays bind to the first
/// <see cref="Bindable"/>: the model keeps one copy of an array's bytes, so a bouncing device (whose copy of a bound
/// array moves only at the array's syncs) is left to the DMA steps on pool buffers.
/// </summary>
public static class ModelDevices
{
    public static readonly DmaDeviceOptions[] Options =
    [
        new() { Name = "direct64", OpsKind = DmaOpsKind.Direct, MaskBits = 64, Coherent = true },
        new() { Name = "direct32", OpsKind = DmaOpsKind.Direct, MaskBits = 32, Coherent = false },
        new() { Name = "iommu32", OpsKind = DmaOpsKind.Iommu, MaskBits = 32, Coherent = false },
        new() { Name = "bounce32", OpsKind = DmaOpsKind.Swiotlb, MaskBits = 32, Coherent = false },
    ];

    public static int Count => Options.Length;

    public const int Bindable = 3;
}
