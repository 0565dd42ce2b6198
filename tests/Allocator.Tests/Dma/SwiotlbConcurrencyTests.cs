using System.Runtime.InteropServices;
using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// The swiotlb under threads and failures: an unmap, a device's release and maps of other devices racing for the
/// same slots; a fault in the middle of a scatterlist. Whatever the interleaving, no slot is leaked, none is given
/// back twice, and no device loses a mapping to another device's unmap.
/// </summary>
public sealed unsafe class SwiotlbConcurrencyTests
{
    private static void AssertAllFree(Swiotlb tlb)
    {
        Assert.Equal(0, tlb.UsedBytes);
        for (int i = 0; i < tlb.Slots; i++)
        {
            if (tlb.OwnerOf(i) != 0) Assert.Fail($"slot {i} is still held by device {tlb.OwnerOf(i)}");
            if (tlb.ListOf(i) != Swiotlb.SegmentSlots - i % Swiotlb.SegmentSlots) Assert.Fail($"slot {i} reads {tlb.ListOf(i)}");
        }
    }

    [Fact]
    public void An_unmap_that_lost_its_mapping_to_the_devices_release_never_frees_another_devices_mapping_at_that_slot()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 8L << 20, NormalBytes = 8L << 20 });
        using var tlb = new Swiotlb(memory, 2L << 20, cpus: 1);
        byte* buffers = (byte*)NativeMemory.AllocZeroed(2 * 4096);
        try
        {
            int x = tlb.Allocate(4096, ulong.MaxValue, owner: 1);
            tlb.Record(x, buffers, 4096, CachingMode.WriteBack);
            var others = new List<int>();
            for (int s; (s = tlb.Allocate(4096, ulong.MaxValue, owner: 3)) >= 0;) others.Add(s); // x's slots are the only ones to free
            // Device 1's unmap on one thread has looked its mapping up (DirectOps.UnmapBounced) ...
            Assert.Equal(x, tlb.MappingOf(x, 1, out int mapped));
            // ... when another thread releases device 1, and device 2 maps the same 4 KiB into the freed slots ...
            tlb.ReleaseAllOf(1);
            int y = tlb.Allocate(4096, ulong.MaxValue, owner: 2);
            Assert.Equal(x, y);
            tlb.Record(y, buffers + 4096, 4096, CachingMode.WriteBack);
            // ... then the unmap claims: it must find no mapping of device 1 there, and leave device 2's alone.
            Assert.False(tlb.TryUnmap(x, mapped, owner: 1, bounceBack: false));
            Assert.Equal(2, tlb.OwnerOf(y));
            Assert.Equal(y, tlb.MappingOf(y, 2, out int still));
            Assert.Equal(4096, still);
            Assert.True(tlb.TryUnmap(y, 4096, owner: 2, bounceBack: false));
            foreach (int s in others) tlb.Release(s, 4096);
            AssertAllFree(tlb);
        }
        finally
        {
            NativeMemory.Free(buffers);
        }
    }
}
