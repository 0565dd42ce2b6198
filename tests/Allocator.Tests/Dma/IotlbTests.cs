using PagePool.Dma;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

public sealed class IotlbTests
{
    [Fact]
    public void A_filled_translation_is_found_until_its_own_page_is_invalidated()
    {
        var tlb = new Iotlb(2);
        tlb.Fill(0x1234, pte: 0x5000 | 3, host: 0x7f00_0000_1000, block: 42);

        tlb.Invalidate(0x1235, 1); // another page, another slot
        Assert.True(tlb.TryLookup(0x1234, out ulong pte, out ulong host, out ulong block));
        Assert.Equal((0x5000UL | 3, 0x7f00_0000_1000UL, 42UL), (pte, host, block));

        tlb.Invalidate(0x1230, 8); // a range covering it
        Assert.False(tlb.TryLookup(0x1234, out pte, out host, out block));
        Assert.Equal((0UL, 0UL, 0UL), (pte, host, block));
    }

    [Fact]
    public void Pages_sharing_a_slot_replace_each_other_and_invalidating_the_evicted_one_leaves_the_other()
    {
        var tlb = new Iotlb(2);
        tlb.Fill(7, 0x7000 | 1, 0x1000, 1);
        tlb.Fill(7 + 256, 0x8000 | 1, 0x2000, 2); // direct-mapped: same slot

        Assert.False(tlb.TryLookup(7, out _, out _, out _));
        tlb.Invalidate(7, 1);
        Assert.True(tlb.TryLookup(7 + 256, out ulong pte, out _, out ulong block));
        Assert.Equal((0x8000UL | 1, 2UL), (pte, block));
    }

    [Fact]
    public void A_full_flush_drops_every_entry_and_later_fills_are_found()
    {
        var tlb = new Iotlb(2);
        for (ulong p = 0; p < 256; p++) tlb.Fill(p, (p << 12) | 3, p, p);

        tlb.InvalidateAll(0);

        for (ulong p = 0; p < 256; p++) Assert.False(tlb.TryLookup(p, out _, out _, out _));
        tlb.Fill(9, 0x9000 | 3, 9, 9);
        Assert.True(tlb.TryLookup(9, out ulong pte, out _, out _));
        Assert.Equal(0x9000UL | 3, pte);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(5)] // a CPU number past the counters wraps onto one of them
    public void A_full_flush_counted_on_any_cpu_drops_entries_filled_on_every_cpu(int flushingCpu)
    {
        var tlb = new Iotlb(2);
        tlb.Fill(3, 0x3000 | 3, 3, 3);
        tlb.InvalidateAll(flushingCpu == 0 ? 1 : 0); // the other CPU's flush first: an entry filled after it is live
        tlb.Fill(4, 0x4000 | 3, 4, 4);
        Assert.True(tlb.TryLookup(4, out _, out _, out _));

        tlb.InvalidateAll(flushingCpu);

        Assert.False(tlb.TryLookup(3, out _, out _, out _));
        Assert.False(tlb.TryLookup(4, out _, out _, out _));
    }

    [Fact]
    public void Concurrent_fills_invalidations_and_lookups_never_see_a_half_written_entry()
    {
        // Four threads on two CPUs: two refill and invalidate the same 16 slots (and now and then the whole IOTLB)
        // with entries whose fields are all derived from one value, two look them up. A hit must return the fields of one fill, never a mix of two.
        var tlb = new Iotlb(2);
        const int Rounds = 200_000;
        long hits = 0, torn = 0;
        var threads = new Thread[4];
        for (int t = 0; t < threads.Length; t++)
        {
            int me = t;
            threads[t] = new Thread(() =>
            {
                var rng = new Random(1000 + me);
                for (int i = 0; i < Rounds; i++)
                {
                    ulong pfn = (ulong)rng.Next(16) + (ulong)rng.Next(2) * 256; // two pages per slot
                    if (me < 2)
                    {
                        ulong v = (ulong)rng.NextInt64(1, long.MaxValue >> 16);
                        if ((i & 1023) == 1023) tlb.InvalidateAll(me); // each writer flushes as its own CPU
                        else if ((i & 7) == 7) tlb.Invalidate(pfn, 1);
                        else tlb.Fill(pfn, (v << 12) | 3, v * 3, v ^ pfn);
                    }
                    else if (tlb.TryLookup(pfn, out ulong pte, out ulong host, out ulong block))
                    {
                        Interlocked.Increment(ref hits);
                        ulong v = pte >> 12;
                        if ((pte & 0xFFF) != 3 || host != v * 3 || block != (v ^ pfn)) Interlocked.Increment(ref torn);
                    }
                }
            });
            threads[t].Start();
        }
        foreach (var th in threads) th.Join();

        Assert.Equal(0, torn);
        Assert.True(hits > 0, "the lookups never found an entry: the test checked nothing");
    }
}
