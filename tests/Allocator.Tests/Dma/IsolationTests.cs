using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// Isolation over many random device accesses: several devices map and unmap random byte ranges of their own
/// pages, and each access of a device is predicted from that device's live mappings alone, at the granule its ops
/// kind translates with (a cache line for direct and Xen, where the platform tracks mapped lines; a 2 KiB bounce
/// slot for swiotlb; an IO page, with its read/write permission, for the IOMMU). An access the prediction says is
/// unmapped must fault and be counted; one it says is mapped must land. Addresses are drawn from the device's own
/// mappings, from other devices' mappings, and from mappings already unmapped, inside them or just past their edges.
/// </summary>
public sealed class IsolationTests
{
    private sealed record Mapping(int Device, ulong Dma, int Size, DmaDirection Direction, PageHandle Block);

    public static TheoryData<DmaOpsKind> Kinds => new() { DmaOpsKind.Direct, DmaOpsKind.Iommu, DmaOpsKind.Swiotlb, DmaOpsKind.Xen };

    /// <summary>The accesses each kind runs; the README's isolation figure is 4 x this.</summary>
    internal const int Accesses = 20_000;

    [Theory, MemberData(nameof(Kinds))]
    public void Every_access_outside_a_devices_own_mappings_faults_and_is_counted(DmaOpsKind kind)
    {
        using var m = new DmaTestMachine(xen: kind == DmaOpsKind.Xen, swiotlb: 8L << 20);
        var random = new Random(20261121 + (int)kind);
        var devices = Enumerable.Range(0, 3).Select(i => m.Device($"dev{i}", kind)).ToArray();
        var live = new List<Mapping>();
        var gone = new List<Mapping>();
        var blocks = new List<PageHandle>();
        long expectedFaults = 0, landed = 0;
        var one = new byte[1];
        try
        {
            for (int step = 0; step < Accesses; step++)
            {
                int roll = random.Next(100);
                if (roll < 6 || live.Count == 0)
                {
                    int d = random.Next(devices.Length);
                    var block = m.Memory.AllocateBlock(Zone.Dma32, 0);
                    blocks.Add(block);
                    int offset = random.Next(PhysicalMemory.PageSize - 1);
                    int size = 1 + random.Next(PhysicalMemory.PageSize - offset);
                    var dir = (DmaDirection)random.Next(3);
                    ulong dma = devices[d].MapPage(block, offset, size, dir);
                    Assert.False(devices[d].MappingError(dma));
                    live.Add(new Mapping(d, dma, size, dir, block));
                    continue;
                }
                if (roll < 10 && live.Count > 4)
                {
                    var u = live[random.Next(live.Count)];
                    devices[u.Device].UnmapPage(u.Dma, u.Size, u.Direction);
                    live.Remove(u);
                    gone.Add(u);
                    continue;
                }
                // An access: a device, and an address from its own, another's, or an unmapped mapping.
                int dev = random.Next(devices.Length);
                var pool = roll < 55 || gone.Count == 0 ? live : gone;
                var from = pool[random.Next(pool.Count)];
                // Inside the mapping, or up to 256 bytes either side of it: the edges of a granule.
                long delta = random.Next(4) == 0 ? random.Next(-256, from.Size + 256) : random.Next(from.Size);
                ulong at = (ulong)Math.Max(0, (long)from.Dma + delta);
                bool write = random.Next(2) == 0;
                bool reachable = Reachable(kind, live, dev, at, write);
                long before = devices[dev].Faults;
                try
                {
                    if (write) devices[dev].Engine.Write(at, one);
                    else devices[dev].Engine.Read(at, one);
                    Assert.True(reachable, $"{kind}: device {dev} reached 0x{at:x} ({(write ? "write" : "read")}) with no mapping of its own covering it");
                    landed++;
                }
                catch (DmaFaultException e)
                {
                    Assert.False(reachable, $"{kind}: device {dev} faulted at 0x{at:x} inside its own mapping: {e.Message}");
                    Assert.Equal(before + 1, devices[dev].Faults);
                    expectedFaults++;
                }
            }
            Assert.Equal(expectedFaults, devices.Sum(d => d.Faults));
            Assert.True(expectedFaults > Accesses / 10 && landed > Accesses / 10, $"{kind}: {expectedFaults} faults and {landed} landed accesses: the draw must exercise both");
        }
        finally
        {
            foreach (var u in live) devices[u.Device].UnmapPage(u.Dma, u.Size, u.Direction);
            foreach (var b in blocks) m.Memory.FreeBlock(b);
        }
    }

    // The reference: whether device dev's own live mappings cover the granule of `at` with the access's permission.
    private static bool Reachable(DmaOpsKind kind, List<Mapping> live, int dev, ulong at, bool write)
    {
        int shift = kind switch
        {
            DmaOpsKind.Iommu => PhysicalMemory.PageShift,
            DmaOpsKind.Swiotlb => 11, // 2 KiB slots
            _ => 6,                   // cache lines
        };
        foreach (var mp in live)
        {
            if (mp.Device != dev) continue;
            ulong first = mp.Dma >> shift, last = (mp.Dma + (ulong)mp.Size - 1) >> shift;
            if ((at >> shift) < first || (at >> shift) > last) continue;
            if (kind != DmaOpsKind.Iommu) return true;
            // IO page permissions: ToDevice mappings are read-only to the device, FromDevice write-only.
            bool allowed = mp.Direction == DmaDirection.Bidirectional
                           || (write ? mp.Direction == DmaDirection.FromDevice : mp.Direction == DmaDirection.ToDevice);
            if (allowed) return true;
        }
        return false;
    }
}
