using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed class XenTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions
    {
        ArenaBytes = 8L << 20, Dma32Bytes = 16L << 20, NormalBytes = 16L << 20, Xen = true, XenSeed = 42,
    });

    public void Dispose() => _memory.Dispose();

    [Fact]
    public void A_dma32_pseudo_frame_can_have_its_machine_frame_above_4_GiB()
    {
        // seeds/002: GFP_DMA32 under Xen gives a pseudo frame below 4 GiB backed by a machine frame above it.
        var block = _memory.AllocateBlock(Zone.Dma32, 0);
        Assert.True(_memory.PhysicalAddress(block) < 1UL << 32);
        bool above = false;
        for (int i = 0; i < 64 && !above; i++)
        {
            var p = _memory.AllocateBlock(Zone.Dma32, 0);
            above = _memory.MachineAddress(p) >= 1UL << 32;
        }
        Assert.True(above);
    }

    [Fact]
    public void Contiguous_pseudo_frames_are_scattered_in_machine_space()
    {
        var block = _memory.AllocateBlock(Zone.Dma32, 4);
        Assert.False(_memory.IsMachineContiguous(_memory.FrameOf(block), 4));
    }

    [Fact]
    public void Machine_to_pseudo_inverts_pseudo_to_machine()
    {
        var block = _memory.AllocateBlock(Zone.Normal, 9);
        ulong first = _memory.FrameOf(block);
        for (ulong k = 0; k < 512; k++)
        {
            Assert.True(_memory.TryPseudoFrameOf(_memory.MachineFrameOf(first + k), out ulong back));
            Assert.Equal(first + k, back);
        }
    }

    [Fact]
    public void Making_a_range_contiguous_puts_it_below_the_limit_and_destroying_restores_it()
    {
        var block = _memory.AllocateBlock(Zone.Dma32, 3);
        ulong frame = _memory.FrameOf(block);
        ulong before = _memory.MachineFrameOf(frame);

        Assert.True(_memory.TryMakeContiguous(block, uint.MaxValue, out ulong machine));
        Assert.True(machine + 8 * 4096 - 1 <= uint.MaxValue);
        Assert.Equal(machine, _memory.MachineAddress(block));
        Assert.True(_memory.IsMachineContiguous(frame, 3));
        Assert.True(_memory.TryPseudoFrameOf(machine >> 12, out ulong pfn) && pfn == frame);
        Assert.False(_memory.TryPseudoFrameOf(before, out _)); // the old machine frame went to the hypervisor

        Assert.True(_memory.DestroyContiguous(block));
        Assert.Equal(before, _memory.MachineFrameOf(frame));
        Assert.False(_memory.DestroyContiguous(block));
    }

    [Fact]
    public void Contiguous_regions_below_a_tight_limit_run_out_with_false_not_an_exception()
    {
        var block = _memory.AllocateBlock(Zone.Dma32, 0);
        Assert.False(_memory.TryMakeContiguous(block, (2UL << 30) - 1, out _)); // the window starts at 2 GiB
    }

    [Theory]
    [InlineData(ulong.MaxValue)] // a 64-bit mask: limit + 1 wraps to 0
    [InlineData(0xFFFF_FFFF_FFUL)] // 40 bits
    [InlineData(0xFFFF_FFFFUL)] // 32 bits
    public void A_limit_up_to_the_whole_64_bit_space_finds_a_contiguous_range_below_it(ulong limit)
    {
        var block = _memory.AllocateBlock(Zone.Dma32, 0);
        Assert.True(_memory.TryMakeContiguous(block, limit, out ulong machine));
        Assert.True(machine + 4096 - 1 <= limit);
    }

    [Fact]
    public void A_limit_one_byte_short_of_a_frame_excludes_that_frame()
    {
        var block = _memory.AllocateBlock(Zone.Dma32, 0);
        // The window starts at 2 GiB: a limit ending one byte before the first frame's last byte leaves no frame.
        Assert.False(_memory.TryMakeContiguous(block, (2UL << 30) + 4096 - 2, out _));
        Assert.True(_memory.TryMakeContiguous(block, (2UL << 30) + 4096 - 1, out ulong machine));
        Assert.Equal(2UL << 30, machine);
    }

    [Fact]
    public void The_same_seed_gives_the_same_layout()
    {
        using var twin = new PhysicalMemory(_memory.Options);
        for (ulong f = 4096; f < 4096 + 100; f++)
            Assert.Equal(_memory.MachineFrameOf(f), twin.MachineFrameOf(f));
    }
}
