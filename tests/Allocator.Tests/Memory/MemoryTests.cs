using PagePool.Memory;
using PagePool.Native;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed class MemoryTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 16L << 20, NormalBytes = 64L << 20 });

    public void Dispose() => _memory.Dispose();

    [Fact]
    public void The_view_and_the_linear_alias_show_the_same_bytes()
    {
        var page = _memory.AllocateBlock(Zone.Normal, 0);
        _memory.GetSpan(page)[100] = 0x5A;
        Assert.Equal(0x5A, _memory.GetAliasSpan(page)[100]);
        _memory.GetAliasSpan(page)[4000] = 0xC3;
        Assert.Equal(0xC3, _memory.GetSpan(page)[4000]);
    }

    [Fact]
    public void Fresh_blocks_read_zero()
    {
        var block = _memory.AllocateBlock(Zone.Normal, 3);
        Assert.True(_memory.GetSpan(block).IndexOfAnyExcept((byte)0) < 0);
    }

    [Theory]
    [InlineData(CachingMode.WriteCombined)]
    [InlineData(CachingMode.Uncached)]
    public void Using_the_cached_alias_of_a_non_writeback_page_is_reported_as_a_double_mapping(CachingMode mode)
    {
        var page = _memory.AllocateBlock(Zone.Normal, 0);
        _memory.SetCaching(page, mode);
        var e = Assert.Throws<DoubleMappingException>(() => _memory.GetAliasSpan(page));
        Assert.Equal(mode, e.Caching);
        Assert.Equal(page, e.Handle);
    }

    [Fact]
    public void A_caching_round_trip_preserves_page_contents()
    {
        var block = _memory.AllocateBlock(Zone.Normal, 1);
        var pattern = new byte[8192];
        new Random(7).NextBytes(pattern);
        _memory.Write(block, 0, pattern);
        foreach (var mode in new[] { CachingMode.WriteCombined, CachingMode.Uncached, CachingMode.WriteBack })
        {
            _memory.SetCaching(block, mode);
            Assert.Equal(mode, _memory.CachingOf(block));
            Assert.True(_memory.GetSpan(block).SequenceEqual(pattern));
        }
        Assert.True(_memory.GetAliasSpan(block).SequenceEqual(pattern));
    }

    [Theory]
    [InlineData(CachingMode.WriteBack)]
    [InlineData(CachingMode.WriteCombined)]
    [InlineData(CachingMode.Uncached)]
    public void Writes_land_in_every_caching_mode_at_any_alignment(CachingMode mode)
    {
        var page = _memory.AllocateBlock(Zone.Normal, 0);
        _memory.SetCaching(page, mode);
        var data = new byte[333];
        new Random(3).NextBytes(data);
        _memory.Write(page, 7, data);
        var back = new byte[333];
        _memory.Read(page, 7, back);
        Assert.Equal(data, back);
    }

    [Fact]
    public void A_batched_change_over_contiguous_pages_makes_one_page_table_change()
    {
        var pages = new PageHandle[64];
        for (int i = 0; i < pages.Length; i++) pages[i] = _memory.AllocateBlock(Zone.Normal, 0);
        Assert.Equal(1, _memory.SetCaching(pages, CachingMode.WriteCombined));
        Assert.All(pages, p => Assert.Equal(CachingMode.WriteCombined, _memory.CachingOf(p)));
        Assert.Equal(1, _memory.SetCaching(pages, CachingMode.WriteBack));
    }

    [Fact]
    public void Writing_outside_a_block_is_rejected()
    {
        var page = _memory.AllocateBlock(Zone.Normal, 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => _memory.Write(page, 4090, new byte[10]));
    }

    [Fact]
    public void Dma32_blocks_lie_below_4_GiB_and_normal_blocks_above()
    {
        var low = _memory.AllocateBlock(Zone.Dma32, 0);
        var high = _memory.AllocateBlock(Zone.Normal, 0);
        Assert.Equal(Zone.Dma32, _memory.ZoneOf(low));
        Assert.Equal(Zone.Normal, _memory.ZoneOf(high));
        Assert.True(_memory.PhysicalAddress(low) < 1UL << 32);
        Assert.True(_memory.PhysicalAddress(high) >= 1UL << 32);
        Assert.Equal(_memory.PhysicalAddress(low), _memory.MachineAddress(low)); // bare metal: identity
    }

    [Fact]
    public void An_exhausted_zone_gives_a_typed_error()
    {
        // 16 MiB of DMA32 is eight order-9 blocks.
        for (int i = 0; i < 8; i++) _memory.AllocateBlock(Zone.Dma32, 9);
        var e = Assert.Throws<ZoneExhaustedException>(() => _memory.AllocateBlock(Zone.Dma32, 0));
        Assert.Equal(Zone.Dma32, e.Zone);
    }

    [Fact]
    public void Blocks_are_aligned_to_their_order_and_freed_buddies_merge()
    {
        var pages = new PageHandle[512];
        for (int i = 0; i < pages.Length; i++) pages[i] = _memory.AllocateBlock(Zone.Dma32, 0);
        var big = _memory.AllocateBlock(Zone.Dma32, 5);
        Assert.Equal(0UL, _memory.FrameOf(big) % 32);
        foreach (var p in pages) _memory.FreeBlock(p);
        _memory.FreeBlock(big);
        // Everything merged back: all eight order-9 blocks of the zone can be taken again.
        for (int i = 0; i < 8; i++) _memory.AllocateBlock(Zone.Dma32, 9);
    }

    [Fact]
    public void A_freed_handle_is_a_double_free_when_given_back_again()
    {
        var page = _memory.AllocateBlock(Zone.Normal, 0);
        _memory.FreeBlock(page);
        var e = Assert.Throws<PageHandleException>(() => _memory.FreeBlock(page));
        Assert.Equal(HandleError.DoubleFree, e.Error);
    }

    [Fact]
    public void A_handle_whose_page_was_handed_out_again_is_stale()
    {
        var page = _memory.AllocateBlock(Zone.Normal, 0);
        _memory.FreeBlock(page);
        var again = _memory.AllocateBlock(Zone.Normal, 0);
        Assert.Equal(_memory.FrameOf(page), _memory.FrameOf(again)); // LIFO reuse of the same frame
        var e = Assert.Throws<PageHandleException>(() => _memory.GetSpan(page));
        Assert.Equal(HandleError.Stale, e.Error);
        Assert.Equal(0, _memory.GetSpan(again)[0]); // the holder of the new handle is unaffected
    }

    [Fact]
    public void A_handle_from_another_memory_space_is_foreign()
    {
        using var other = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 0, NormalBytes = 4L << 20 });
        var theirs = other.AllocateBlock(Zone.Normal, 0);
        var e = Assert.Throws<PageHandleException>(() => _memory.FreeBlock(theirs));
        Assert.Equal(HandleError.Foreign, e.Error);
        Assert.Equal(0, other.GetSpan(theirs)[0]); // still fine where it belongs
    }

    [Fact]
    public void Forged_handles_are_malformed_or_stale_never_trusted()
    {
        var page = _memory.AllocateBlock(Zone.Normal, 1);
        Assert.Equal(HandleError.Malformed, Assert.Throws<PageHandleException>(() => _memory.GetSpan(PageHandle.Null)).Error);
        var wrongGeneration = page.WithGeneration(page.Generation + 5);
        Assert.Equal(HandleError.Stale, Assert.Throws<PageHandleException>(() => _memory.GetSpan(wrongGeneration)).Error);
        var unaligned = page.WithValue(page.Value + (1UL << PageHandle.PageShift));
        Assert.Equal(HandleError.Malformed, Assert.Throws<PageHandleException>(() => _memory.GetSpan(unaligned)).Error);
        var wrongOrder = page.WithValue(page.Value & ~(0xFUL << PageHandle.OrderShift));
        Assert.Equal(HandleError.Mismatch, Assert.Throws<PageHandleException>(() => _memory.GetSpan(wrongOrder)).Error);
        Assert.Equal(0, _memory.GetSpan(page)[0]);
    }

    [Fact]
    public void An_impossible_mmap_gives_a_typed_error_naming_the_call_and_errno()
    {
        var e = Assert.Throws<NativeCallException>(() => Mmap(nuint.MaxValue & ~(nuint)4095));
        Assert.Equal("mmap", e.Operation);
        Assert.Equal("ENOMEM", e.ErrnoName);
        Assert.Contains("mmap failed with ENOMEM", e.Message);
    }

    [Fact]
    public void A_zero_length_mmap_is_EINVAL()
    {
        var e = Assert.Throws<NativeCallException>(() => Mmap(0));
        Assert.Equal(Errno.EINVAL, e.Errno);
    }

    private static unsafe void Mmap(nuint length)
        => Libc.Mmap(null, length, Libc.PROT_READ, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
}
