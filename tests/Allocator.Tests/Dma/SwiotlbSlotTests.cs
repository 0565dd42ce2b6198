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
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 16L << 20, NormalBytes = 8L << 20 });

    public void Dispose() => _memory.Dispose();

    // Linux's swiotlb_search_pool_area over one area, slot by slot (list[i] >= nslots is "the run from i is free
    // and inside i's segment"), with PagePool's index rule after each allocation.
    private sealed class LinuxArea(int slots)
    {
        private readonly bool[] _used = new bool[slots];
        private int _index, _usedCount;

        internal int Allocate(int size)
        {
            int nslots = (size + Swiotlb.SlotSize - 1) / Swiotlb.SlotSize, stride = size >= 4096 ? 2 : 1;
            if (nslots > Swiotlb.SegmentSlots || slots - _usedCount < nslots) return -1;
            int rel = (_index + stride - 1) / stride * stride;
            for (int tries = 0; tries < slots / stride; tries++, rel += stride)
            {
                if (rel + nslots > slots) rel = 0;
                if (!Fits(rel, nslots)) continue;
                for (int s = rel; s < rel + nslots; s++) _used[s] = true;
                _usedCount += nslots;
                int next = rel + nslots;
                _index = next >= slots || (next >= Swiotlb.HotSlots && _usedCount <= Swiotlb.HotSlots / 2) ? 0 : next;
                return rel;
            }
            return -1;
        }

        internal void Release(int slot, int size)
        {
            int nslots = (size + Swiotlb.SlotSize - 1) / Swiotlb.SlotSize;
            for (int s = slot; s < slot + nslots; s++) _used[s] = false;
            _usedCount -= nslots;
        }

        private bool Fits(int at, int nslots)
        {
            if (at / Swiotlb.SegmentSlots != (at + nslots - 1) / Swiotlb.SegmentSlots) return false;
            for (int s = at; s < at + nslots; s++) if (_used[s]) return false;
            return true;
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Every_allocation_picks_the_slot_Linuxs_walk_picks(int seed)
    {
        using var tlb = new Swiotlb(_memory, 4L << 20, cpus: 1); // one area: the walk is the whole pool
        var linux = new LinuxArea(tlb.Slots);
        var rng = new Random(seed);
        var live = new List<(int Slot, int Size)>();
        int found = 0, full = 0;
        for (int step = 0; step < 20_000; step++)
        {
            // Phases of light and heavy load, so the index both stays in the window and moves on through the area.
            bool heavy = step / 2000 % 2 == 1;
            if (live.Count > 0 && rng.Next(100) < (heavy ? 40 : 55))
            {
                int k = rng.Next(live.Count);
                tlb.Release(live[k].Slot, live[k].Size);
                linux.Release(live[k].Slot, live[k].Size);
                live.RemoveAt(k);
                continue;
            }
            int size = rng.Next(4) switch { 0 => rng.Next(1, 2049), 1 => 4096, 2 => rng.Next(2049, 20_000), _ => rng.Next(20_000, 300_000) };
            int want = linux.Allocate(size);
            int got = tlb.Allocate(size, ulong.MaxValue, owner: 1);
            if (want != got) Assert.Fail($"step {step}: {size} bytes, Linux's walk picks slot {want}, the allocator {got}");
            if (got < 0) { full++; continue; }
            found++;
            live.Add((got, size));
        }
        Assert.True(found > 5000 && full > 100, $"{found} allocations, {full} refused: both paths must be exercised");
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
