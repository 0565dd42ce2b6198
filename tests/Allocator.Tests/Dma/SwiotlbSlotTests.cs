using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// The swiotlb slot allocator against Linux's: the same candidates in the same order from the area's index, runs
/// that never cross a segment, page-aligned runs for a page or more; and the index policy that keeps a light load
/// on cache-warm slots while a freed slot still waits for the rest of the window.
/// </summary>
public sealed class SwiotlbSlotTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 8L << 20 });

    public void Dispose() => _memory.Dispose();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void The_pool_is_one_physical_range_found_by_arithmetic_and_an_address_a_byte_outside_it_is_not_bounce_memory(bool xen)
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 8L << 20, Xen = xen, XenSeed = 7 });
        var held = memory.AllocateBlock(Zone.Dma32, PhysicalMemory.MaxOrder); // the pool starts after it, not at the zone's start
        using var tlb = new Swiotlb(memory, 6L << 20, cpus: 2);
        var blocks = tlb.Blocks;
        Assert.Equal(3, blocks.Length);
        ulong phys = memory.PhysicalAddress(blocks[0]);
        for (int b = 0; b < blocks.Length; b++)
        {
            int first = b * 1024; // slots per 2 MiB block
            Assert.Equal(phys + ((ulong)b << 21), memory.PhysicalAddress(blocks[b])); // physically one range
            fixed (byte* view = memory.GetSpan(blocks[b])) Assert.True(view == tlb.HostOf(first)); // and one range in the view
            ulong bus = tlb.BusOf(first);
            Assert.Equal(xen ? memory.MachineAddress(blocks[b]) : memory.PhysicalAddress(blocks[b]), bus);
            Assert.Equal(first, tlb.SlotOf(bus));
            Assert.Equal(first + 1023, tlb.SlotOf(bus + (2UL << 20) - 1));
            Assert.Equal(first + 1, tlb.SlotOf(bus + Swiotlb.SlotSize));
        }
        var (start, end) = tlb.BusRange;
        Assert.Equal(-1, tlb.SlotOf(start - 1));
        Assert.Equal(-1, tlb.SlotOf(end));
        Assert.Equal(-1, tlb.SlotOf(memory.MachineAddress(held))); // the DMA32 block just below the pool
        if (!xen) Assert.Equal(6UL << 20, end - start);
        memory.FreeBlock(held);
    }

    [Fact]
    public void A_pool_larger_than_an_arena_is_a_typed_error_naming_ArenaBytes_and_takes_nothing()
    {
        var e = Assert.ThrowsAny<PagePoolException>(() => new Swiotlb(_memory, 18L << 20, cpus: 1)); // arenas of 16 MiB
        Assert.Contains("does not fit in one arena (16 MiB)", e.Message);
        Assert.Equal(0, _memory.UsedBytes(Zone.Dma32));
        using var tlb = new Swiotlb(_memory, 16L << 20, cpus: 1); // a whole arena is fine
        Assert.Equal(16L << 20, tlb.PoolBytes);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Every_allocation_picks_the_slot_Linuxs_walk_picks(int seed)
    {
        using var tlb = new Swiotlb(_memory, 4L << 20, cpus: 1); // one area: the walk is the whole pool
        var linux = new LinuxPool(tlb);
        var rng = new Random(seed);
        var live = new List<(int Slot, int Size)>();
        int found = 0, full = 0;
        for (int step = 0; step < 20_000; step++)
        {
            // Phases of light and heavy load, so the index both stays in the window and moves on through the area.
            bool heavy = step / 2000 % 2 == 1;
            if (ReleaseOneSometimes(tlb, linux, live, rng, percent: heavy ? 40 : 55)) continue;
            int size = rng.Next(4) switch { 0 => rng.Next(1, 2049), 1 => 4096, 2 => rng.Next(2049, 20_000), _ => rng.Next(20_000, 300_000) };
            int want = linux.Search(0, size, ulong.MaxValue);
            if (want >= 0) linux.Take(want, size);
            int got = tlb.Allocate(size, ulong.MaxValue, owner: 1);
            if (want != got) Assert.Fail($"step {step}: {size} bytes, Linux's walk picks slot {want}, the allocator {got}");
            if (got < 0) { full++; continue; }
            found++;
            live.Add((got, size));
        }
        Assert.True(found > 5000 && full > 100, $"{found} allocations, {full} refused: both paths must be exercised");
    }

    // With `percent` chance (and something live), release a random live run from both allocators.
    private static bool ReleaseOneSometimes(Swiotlb tlb, LinuxPool linux, List<(int Slot, int Size)> live, Random rng, int percent)
    {
        if (live.Count == 0 || rng.Next(100) >= percent) return false;
        int k = rng.Next(live.Count);
        tlb.Release(live[k].Slot, live[k].Size);
        linux.Release(live[k].Slot, live[k].Size);
        live.RemoveAt(k);
        return true;
    }

    // Linux's swiotlb_search_pool_area over a pool of one or several areas, slot by slot (list[] recomputed from the
    // used slots, so nothing of the bitmaps is shared with the allocator; list[i] >= nslots is "the run from i is
    // free and inside i's segment"), with PagePool's index rule after each allocation and the device's mask: a
    // candidate whose bus range passes the mask is skipped, the walk goes on with the next one.
    private sealed class LinuxPool(Swiotlb tlb)
    {
        private readonly bool[] _used = new bool[tlb.Slots];
        private readonly int _areaSlots = tlb.AreaSlots;
        private readonly int[] _index = new int[tlb.Slots / tlb.AreaSlots], _usedCount = new int[tlb.Slots / tlb.AreaSlots];
        private readonly int[] _list = new int[tlb.Slots];

        internal int Areas => _index.Length;

        // The slot area `a` gives for `size` bytes under `mask`, -1 when none; changes nothing.
        internal int Search(int a, int size, ulong mask)
        {
            int nslots = (size + Swiotlb.SlotSize - 1) / Swiotlb.SlotSize, stride = size >= 4096 ? 2 : 1, first = a * _areaSlots;
            if (nslots > Swiotlb.SegmentSlots || _areaSlots - _usedCount[a] < nslots) return -1;
            for (int s = tlb.Slots - 1; s >= 0; s--) // list[]: free slots from s to the next used one or the segment's end
                _list[s] = _used[s] ? 0 : (s % Swiotlb.SegmentSlots == Swiotlb.SegmentSlots - 1 || s + 1 == tlb.Slots ? 1 : _list[s + 1] + 1);
            int rel = (_index[a] + stride - 1) / stride * stride;
            for (int tries = 0; tries < _areaSlots / stride; tries++, rel += stride)
            {
                if (rel + nslots > _areaSlots) rel = 0;
                int i = first + rel;
                if (_list[i] < nslots) continue;
                if (tlb.BusOf(i) + (ulong)size - 1 > mask) continue;
                return i;
            }
            return -1;
        }

        internal void Take(int slot, int size)
        {
            int nslots = (size + Swiotlb.SlotSize - 1) / Swiotlb.SlotSize, a = slot / _areaSlots;
            for (int s = slot; s < slot + nslots; s++) { Assert.False(_used[s]); _used[s] = true; }
            _usedCount[a] += nslots;
            int next = slot - a * _areaSlots + nslots;
            _index[a] = next >= _areaSlots || (next >= Swiotlb.HotSlots && _usedCount[a] <= Swiotlb.HotSlots / 2) ? 0 : next;
        }

        internal void Release(int slot, int size)
        {
            int nslots = (size + Swiotlb.SlotSize - 1) / Swiotlb.SlotSize;
            for (int s = slot; s < slot + nslots; s++) _used[s] = false;
            _usedCount[slot / _areaSlots] -= nslots;
        }
    }

    // Run lengths at the edges of the two 64-bit words of a segment, and any other.
    private static int EdgeSlots(Random rng) => rng.Next(12) switch
    {
        0 => 1, 1 => 2, 2 => 63, 3 => 64, 4 => 65, 5 => 66, 6 => 127, 7 => 128, 8 => rng.Next(1, 9), _ => rng.Next(1, 129),
    };

    [Theory]
    [InlineData(2, 4, 1)]
    [InlineData(2, 4, 2)]
    [InlineData(4, 4, 3)]
    [InlineData(4, 6, 4)]
    [InlineData(16, 6, 5)] // 3 blocks: areas of 1.5 blocks
    [InlineData(32, 10, 6)] // 5 blocks
    public void With_several_areas_edge_run_lengths_and_masks_below_the_pool_every_allocation_picks_a_slot_Linuxs_walk_picks(int cpus, int mib, int seed)
    {
        using var tlb = new Swiotlb(_memory, (long)mib << 20, cpus);
        var linux = new LinuxPool(tlb);
        var rng = new Random(seed);
        var live = new List<(int Slot, int Size)>();
        var options = new List<int>();
        int found = 0, full = 0, masked = 0;
        for (int step = 0; step < 4000; step++)
        {
            bool heavy = step / 500 % 2 == 1;
            if (ReleaseOneSometimes(tlb, linux, live, rng, percent: heavy ? 35 : 55)) continue;
            int nslots = EdgeSlots(rng);
            int size = Math.Max(1, nslots * Swiotlb.SlotSize - (rng.Next(3) == 0 ? rng.Next(Swiotlb.SlotSize) : 0));
            // A mask that ends inside the pool (inside a segment, off a slot boundary), or none.
            ulong mask = rng.Next(4) == 0 ? tlb.BusOf(rng.Next(tlb.Slots)) + (ulong)rng.Next(2 * Swiotlb.SlotSize) : ulong.MaxValue;
            // The search starts in the calling CPU's area, which the test does not choose: the allocator must give
            // what Linux's walk gives from one of the starting areas.
            options.Clear();
            for (int start = 0; start < linux.Areas; start++)
            {
                int want = -1;
                for (int k = 0; k < linux.Areas && want < 0; k++) want = linux.Search((start + k) % linux.Areas, size, mask);
                options.Add(want);
            }
            int got = tlb.Allocate(size, mask, owner: 1);
            if (!options.Contains(got))
                Assert.Fail($"step {step}: {size} bytes under mask 0x{mask:x}, Linux's walk picks one of [{string.Join(", ", options.Distinct())}], the allocator {got}");
            if (got < 0) { full++; continue; }
            if (mask != ulong.MaxValue) masked++;
            Assert.Equal(got / tlb.AreaSlots, (got + (size - 1) / Swiotlb.SlotSize) / tlb.AreaSlots); // inside one area
            linux.Take(got, size);
            found++;
            live.Add((got, size));
        }
        Assert.True(found > 1000 && full > 50 && masked > 50, $"{found} allocations ({masked} under a mask), {full} refused: every path must be exercised");
        foreach (var (s, z) in live) tlb.Release(s, z);
        Assert.Equal(0, tlb.UsedBytes);
        for (int i = 0; i < tlb.Slots; i++) Assert.Equal(Swiotlb.SegmentSlots - (i % Swiotlb.SegmentSlots), tlb.ListOf(i));
    }

    [Theory]
    [InlineData(16, 6)] // 3 blocks of 1024 slots
    [InlineData(32, 10)] // 5 blocks
    public void Areas_are_whole_segments_so_no_run_and_no_bitmap_word_is_shared_by_two_area_locks(int cpus, int mib)
    {
        using var tlb = new Swiotlb(_memory, (long)mib << 20, cpus);
        Assert.Equal(0, tlb.AreaSlots % Swiotlb.SegmentSlots);
        int runs = 0;
        for (int slot; (slot = tlb.Allocate(100 * Swiotlb.SlotSize, ulong.MaxValue, owner: 1)) >= 0; runs++)
            Assert.Equal(slot / tlb.AreaSlots, (slot + 99) / tlb.AreaSlots);
        Assert.Equal(tlb.Slots / Swiotlb.SegmentSlots, runs); // one run of 100 slots in every segment
    }

    [Fact]
    public void A_light_load_bounces_through_the_first_window_of_slots_and_a_freed_slot_waits_for_the_rest_of_it()
    {
        using var tlb = new Swiotlb(_memory, 4L << 20, cpus: 1);
        var lastUse = new Dictionary<int, int>();
        for (int i = 0; i < 2000; i++)
        {
            int slot = tlb.Allocate(4096, ulong.MaxValue, owner: 1);
            Assert.InRange(slot, 0, Swiotlb.HotSlots - 2);
            if (lastUse.TryGetValue(slot, out int before))
                Assert.Equal(Swiotlb.HotSlots / 2, i - before); // reused only after every other 4 KiB run of the window
            lastUse[slot] = i;
            tlb.Release(slot, 4096);
        }
    }

    [Fact]
    public void Under_a_load_above_half_the_window_the_index_moves_on_through_the_area_as_Linuxs_does()
    {
        using var tlb = new Swiotlb(_memory, 4L << 20, cpus: 1);
        var held = Enumerable.Range(0, Swiotlb.HotSlots / 4 + 1).Select(_ => tlb.Allocate(4096, ulong.MaxValue, owner: 1)).ToList(); // > HotSlots / 2 slots
        int highest = 0;
        for (int i = 0; i < 1000; i++)
        {
            int slot = tlb.Allocate(4096, ulong.MaxValue, owner: 1);
            highest = Math.Max(highest, slot);
            tlb.Release(slot, 4096);
        }
        Assert.True(highest > 4 * Swiotlb.HotSlots, $"highest slot {highest}: the index stayed in the window under load");
        foreach (int s in held) tlb.Release(s, 4096);
    }

    [Fact]
    public void Releasing_slots_that_are_already_free_throws_and_changes_nothing()
    {
        using var tlb = new Swiotlb(_memory, 2L << 20, cpus: 1);
        int a = tlb.Allocate(6000, ulong.MaxValue, owner: 1); // 3 slots
        tlb.Release(a, 6000);
        int b = tlb.Allocate(2048, ulong.MaxValue, owner: 1); // the slot after a's run
        Assert.Equal(a + 3, b);
        Assert.Throws<InvalidOperationException>(() => tlb.Release(a, 6000));
        Assert.Throws<InvalidOperationException>(() => tlb.Release(b - 1, 4096)); // one free slot, one held: refused whole
        Assert.Equal(1, tlb.OwnerOf(b));
        Assert.Equal(2048, tlb.UsedBytes);
        tlb.Release(b, 2048);
        for (int i = 0; i < tlb.Slots; i++) Assert.Equal(Swiotlb.SegmentSlots - (i % Swiotlb.SegmentSlots), tlb.ListOf(i));
    }

    [Fact]
    public void A_run_longer_than_a_segment_is_refused_without_a_search()
    {
        using var tlb = new Swiotlb(_memory, 2L << 20, cpus: 1);
        Assert.Equal(-1, tlb.Allocate(Swiotlb.SegmentSlots * Swiotlb.SlotSize + 1, ulong.MaxValue, owner: 1));
        Assert.Equal(0, tlb.Allocate(Swiotlb.SegmentSlots * Swiotlb.SlotSize, ulong.MaxValue, owner: 1));
    }

    [Theory]
    [InlineData(CachingMode.WriteCombined)]
    [InlineData(CachingMode.Uncached)]
    public void Unmap_bounces_back_into_a_write_combined_or_uncached_buffer_exactly_and_frees_the_slots(CachingMode caching)
    {
        using var m = new DmaTestMachine(checker: false);
        var dev = m.Device("sw", DmaOpsKind.Swiotlb);
        var block = m.Memory.AllocateBlock(Zone.Dma32, 1);
        m.Memory.SetCaching(block, caching);
        var data = DmaTestMachine.Pattern(6000, 9);
        ulong dma = dev.MapPage(block, 100, 6000, DmaDirection.Bidirectional);
        dev.Engine.Write(dma, data);
        dev.UnmapPage(dma, 6000, DmaDirection.Bidirectional); // the copy back is made outside the area's lock
        var got = new byte[6000];
        m.Memory.Read(block, 100, got);
        Assert.Equal(data, got);
        Assert.Equal(0, m.Platform.SwiotlbUsedBytes);
        Assert.Throws<DmaMappingException>(() => dev.UnmapPage(dma, 6000, DmaDirection.Bidirectional));
    }
}
