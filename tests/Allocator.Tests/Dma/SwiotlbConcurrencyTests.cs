using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using PagePool.Dma;
using PagePool.Faults;
using PagePool.Memory;
using PagePool.Native;
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

    [Fact]
    public void Maps_unmaps_syncs_and_device_writes_on_several_devices_while_devices_are_disposed_leave_every_slot_free()
    {
        using var m = new DmaTestMachine(checker: false); // the slots' own bookkeeping is under test
        var keep = new[]
        {
            m.Device("a", DmaOpsKind.Swiotlb),
            m.Device("b", DmaOpsKind.Swiotlb, maskBits: 32, coherent: false),
        };
        DmaDevice? doomed = null;
        int threads = Environment.ProcessorCount * 3, rounds = 12, ops = 0;
        var errors = new ConcurrentQueue<string>();
        using var go = new Barrier(threads + 1);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(100 + t);
            var blocks = new[] { m.Memory.AllocateBlock(Zone.Dma32, 2), m.Memory.AllocateBlock(Zone.Dma32, 2) };
            m.Memory.SetCaching(blocks[1], t % 2 == 0 ? CachingMode.WriteCombined : CachingMode.Uncached); // the copy back outside the lock
            go.SignalAndWait();
            while (Volatile.Read(ref rounds) > 0)
            {
                var d = Volatile.Read(ref doomed);
                var dev = d is not null && rng.Next(2) == 0 ? d : keep[rng.Next(keep.Length)];
                var block = blocks[rng.Next(2)];
                int len = rng.Next(1, 16 << 10), off = rng.Next(0, (16 << 10) - len);
                var dir = (DmaDirection)rng.Next(3);
                var data = new byte[len];
                rng.NextBytes(data);
                try
                {
                    ulong dma = dev.MapPage(block, off, len, dir);
                    dev.Engine.Write(dma, data);
                    if (rng.Next(4) == 0) dev.SyncForCpu(dma, len, dir);
                    dev.UnmapPage(dma, len, dir);
                    if (dir != DmaDirection.ToDevice)
                    {
                        var got = new byte[len];
                        m.Memory.Read(block, off, got);
                        if (!got.AsSpan().SequenceEqual(data)) errors.Enqueue($"{dev.Name}: {len} bytes at {off} came back wrong");
                    }
                }
                // The device being released may refuse at any step: gone (ObjectDisposedException), its mapping
                // already released (unmap: DmaMappingException; the engine: DmaFaultException). Never the others.
                catch (Exception e) when (dev == d && e is ObjectDisposedException or DmaMappingException or DmaFaultException) { }
                catch (Exception e)
                {
                    errors.Enqueue($"{dev.Name}: {e.GetType().Name}: {e.Message}");
                }
                Interlocked.Increment(ref ops);
            }
            foreach (var b in blocks) m.Memory.FreeBlock(b);
        })).ToList();
        workers.ForEach(w => w.Start());
        go.SignalAndWait(TestContext.Current.CancellationToken);
        for (int r = 0; r < rounds; r++)
        {
            var d = m.Device($"x{r}", DmaOpsKind.Swiotlb, coherent: r % 2 == 0);
            Volatile.Write(ref doomed, d);
            for (int until = Volatile.Read(ref ops) + 200; Volatile.Read(ref ops) < until;) Thread.Yield();
            d.Dispose(); // while the workers map, sync, write and unmap on it
        }
        Volatile.Write(ref rounds, 0);
        workers.ForEach(w => w.Join());
        Assert.Empty(errors);
        AssertAllFree(m.Platform.Swiotlb);
    }

    [Fact]
    public void A_scatterlist_whose_third_bounce_finds_no_slot_gives_back_the_first_two()
    {
        using var m = new DmaTestMachine(checker: false);
        var dev = m.Device("sw", DmaOpsKind.Swiotlb);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 2);
        var sg = new DmaScatterlist();
        for (int e = 0; e < 4; e++) sg.Add(block, e * 4096, 3000);
        FaultInjector.Arm(FaultPoint.SwiotlbSlots, skip: 2);
        try
        {
            Assert.Throws<SwiotlbFullException>(() => dev.MapScatterlist(sg, DmaDirection.Bidirectional));
        }
        finally
        {
            FaultInjector.Disarm(FaultPoint.SwiotlbSlots);
        }
        AssertAllFree(m.Platform.Swiotlb);
        Assert.InRange(dev.MapScatterlist(sg, DmaDirection.Bidirectional), 1, 4); // nothing was left half mapped
        dev.UnmapScatterlist(sg, 4, DmaDirection.Bidirectional);
        AssertAllFree(m.Platform.Swiotlb);
        m.Memory.FreeBlock(block);
    }

    [Fact]
    public void A_Xen_pool_whose_third_block_the_hypervisor_will_not_exchange_undoes_the_first_two_and_the_next_device_builds_it_whole()
    {
        using var m = new DmaTestMachine(xen: true, checker: false, swiotlb: 8L << 20);
        long used = m.Memory.UsedBytes(Zone.Dma32);
        FaultInjector.Arm(FaultPoint.XenExchange, skip: 2);
        try
        {
            Assert.ThrowsAny<PagePoolException>(() => m.Device("sw", DmaOpsKind.Xen)); // the pool is built for the first bouncing device
        }
        finally
        {
            FaultInjector.Disarm(FaultPoint.XenExchange);
        }
        Assert.Equal(used, m.Memory.UsedBytes(Zone.Dma32));
        Assert.Equal(0, m.Memory.XenExchangedRegions); // the two exchanged blocks went back to the hypervisor
        var dev = m.Device("sw2", DmaOpsKind.Xen);
        Assert.Equal(8L << 20, m.Memory.UsedBytes(Zone.Dma32) - used);
        Assert.Equal(4, m.Memory.XenExchangedRegions);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 0);
        ulong dma = dev.MapSingle(block, 0, 4096, DmaDirection.Bidirectional);
        dev.UnmapSingle(dma, 4096, DmaDirection.Bidirectional);
        m.Memory.FreeBlock(block);
        AssertAllFree(m.Platform.Swiotlb);
    }

    [Fact]
    public void A_pool_the_DMA32_zone_cannot_hold_in_one_range_is_a_typed_error_that_takes_nothing()
    {
        using var m = new DmaTestMachine(checker: false, swiotlb: 8L << 20); // arenas of 8 MiB, four of them
        var blocks = new PageHandle[16]; // the whole zone, low to high: four 2 MiB blocks in each arena
        for (int i = 0; i < blocks.Length; i++) blocks[i] = m.Memory.AllocateBlock(Zone.Dma32, PhysicalMemory.MaxOrder);
        for (int i = 0; i < blocks.Length; i++)
            if (i % 4 != 1) m.Memory.FreeBlock(blocks[i]); // 24 MiB free, but the second block of every arena held
        Assert.Equal(8L << 20, m.Memory.UsedBytes(Zone.Dma32));
        var e = Assert.ThrowsAny<PagePoolException>(() => m.Device("sw", DmaOpsKind.Swiotlb));
        Assert.Contains("no 8 MiB free in one range", e.Message);
        Assert.Equal(8L << 20, m.Memory.UsedBytes(Zone.Dma32));
        for (int i = 1; i < blocks.Length; i += 4) m.Memory.FreeBlock(blocks[i]);
        Assert.Equal(0, m.Memory.UsedBytes(Zone.Dma32));
        var dev = m.Device("sw2", DmaOpsKind.Swiotlb); // the arenas are whole again: the pool is built in one
        Assert.Equal(8L << 20, m.Memory.UsedBytes(Zone.Dma32));
        var (start, end) = m.Platform.Swiotlb.BusRange;
        Assert.Equal(8UL << 20, end - start);
        GC.KeepAlive(dev);
    }

    [Fact]
    public void An_unmap_of_no_bytes_claims_nothing_and_frees_nothing_even_at_another_devices_mapping()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 8L << 20, NormalBytes = 8L << 20 });
        using var tlb = new Swiotlb(memory, 2L << 20, cpus: 1);
        byte* buffer = stackalloc byte[Swiotlb.SlotSize];
        var heads = new int[64];
        for (int i = 0; i < heads.Length; i++)
        {
            heads[i] = tlb.Allocate(Swiotlb.SlotSize, ulong.MaxValue, owner: 2);
            tlb.Record(heads[i], buffer, Swiotlb.SlotSize, CachingMode.WriteBack);
        }
        int victim = heads[5];
        Assert.Equal(0, tlb.Unmap(victim, 0, owner: 1, bounceBack: true)); // another device, no size
        Assert.Equal(0, tlb.Unmap(victim, 0, owner: 2, bounceBack: true)); // its own, no size
        Assert.Equal(victim, tlb.MappingOf(victim, 2, out int mapped)); // still mapped, whole
        Assert.Equal(Swiotlb.SlotSize, mapped);
        Assert.Equal(0, tlb.ListOf(victim)); // no bit of the word was freed
        Assert.Equal(64L * Swiotlb.SlotSize, tlb.UsedBytes);
        tlb.ReleaseAllOf(2); // returns: no mapping was left claimed half way
        AssertAllFree(tlb);
    }

    [Fact]
    public void A_pool_whose_arena_cannot_be_mapped_is_a_typed_error_that_maps_nothing_and_the_next_device_builds_it()
    {
        using var m = new DmaTestMachine(checker: false, swiotlb: 8L << 20); // nothing of DMA32 mapped yet
        FaultInjector.Arm(FaultPoint.Mmap); // the fresh arena the range is taken from
        try
        {
            Assert.Throws<NativeCallException>(() => m.Device("sw", DmaOpsKind.Swiotlb));
        }
        finally
        {
            FaultInjector.Disarm(FaultPoint.Mmap);
        }
        Assert.Equal(0, m.Memory.MappedBytes(Zone.Dma32));
        Assert.Equal(0, m.Memory.UsedBytes(Zone.Dma32));
        var dev = m.Device("sw2", DmaOpsKind.Swiotlb);
        Assert.Equal(8L << 20, m.Memory.UsedBytes(Zone.Dma32));
        var block = m.Memory.AllocateBlock(Zone.Dma32, 0);
        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
        m.Memory.FreeBlock(block);
        AssertAllFree(m.Platform.Swiotlb);
    }
}
