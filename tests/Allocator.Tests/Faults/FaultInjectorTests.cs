using PagePool.Faults;
using PagePool.Memory;
using PagePool.Native;
using Xunit;

namespace PagePool.Allocator.Tests.Faults;

// Counting the process's mappings only means something while no other test maps or unmaps arenas.
[CollectionDefinition(nameof(FaultInjectorTests), DisableParallelization = true)]
public sealed class FaultInjectorCollection;

/// <summary>The fault injector itself (arming, scope, counting, the environment syntax) and the libc fault points.</summary>
[Collection(nameof(FaultInjectorTests))]
public sealed class FaultInjectorTests : IDisposable
{
    public void Dispose() => FaultInjector.DisarmAll();

    [Fact]
    public void An_armed_point_fails_after_its_skip_count_and_then_disarms_itself()
    {
        FaultInjector.Arm(FaultPoint.SwapWrite, skip: 2, count: 2);
        bool[] fired = Enumerable.Range(0, 6).Select(_ => FaultInjector.ShouldFail(FaultPoint.SwapWrite)).ToArray();
        Assert.Equal([false, false, true, true, false, false], fired);
    }

    [Fact]
    public void A_thread_scoped_fault_never_fires_on_another_thread()
    {
        FaultInjector.Arm(FaultPoint.SwapRead, count: int.MaxValue);
        bool other = true;
        var t = new Thread(() => other = FaultInjector.ShouldFail(FaultPoint.SwapRead));
        t.Start();
        t.Join();
        Assert.False(other);
        Assert.True(FaultInjector.ShouldFail(FaultPoint.SwapRead));
    }

    [Fact]
    public void Injected_failures_are_counted_per_point()
    {
        long before = FaultInjector.Injected(FaultPoint.SwiotlbSlots);
        FaultInjector.Arm(FaultPoint.SwiotlbSlots, count: 3);
        for (int i = 0; i < 5; i++) FaultInjector.ShouldFail(FaultPoint.SwiotlbSlots);
        Assert.Equal(before + 3, FaultInjector.Injected(FaultPoint.SwiotlbSlots));
    }

    [Theory]
    [InlineData("mprotect", FaultPoint.Mprotect, 0, 1)]
    [InlineData("MMAP@100", FaultPoint.Mmap, 100, 1)]
    [InlineData("swapdiskfull@3x7", FaultPoint.SwapDiskFull, 3, 7)]
    [InlineData(" iovaspace x2 ", FaultPoint.IovaSpace, 0, 2)]
    public void The_environment_syntax_names_point_skip_and_count(string spec, FaultPoint point, int skip, int count)
        => Assert.Equal([(point, skip, count)], FaultInjector.Parse(spec));

    [Theory]
    [InlineData("nosuchpoint")]
    [InlineData("mmap@")]
    [InlineData("mmap@-1")]
    [InlineData("mmapx0")]
    [InlineData("3")]
    [InlineData("mmap@1e3")]
    public void A_bad_environment_entry_is_a_format_error_naming_it(string spec)
    {
        var e = Assert.Throws<FormatException>(() => FaultInjector.Parse(spec));
        Assert.Contains(FaultInjector.EnvironmentVariable, e.Message);
    }

    [Fact]
    public void Arming_rejects_a_negative_skip_a_zero_count_and_an_unknown_point()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => FaultInjector.Arm(FaultPoint.Mmap, skip: -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => FaultInjector.Arm(FaultPoint.Mmap, count: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => FaultInjector.Arm((FaultPoint)99));
        Assert.False(FaultInjector.ShouldFail(FaultPoint.Mmap));
    }

    [Theory]
    [InlineData(0)] // the address-space reservation
    [InlineData(1)] // the fixed mapping of the memory file over it
    public unsafe void A_failed_mmap_while_mapping_an_arena_is_typed_leaks_no_mapping_and_clears(int skip)
    {
        // An arena of 46 MiB, a size nothing else here maps: a leaked reservation or memory-file mapping is a new
        // line of exactly that size. Only new lines count: counting every line raced the runtime, which maps and
        // splits its own regions, and other spaces' arenas, which a finalizer may unmap meanwhile.
        const long arenaBytes = 46L << 20;
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = arenaBytes, Dma32Bytes = 0, NormalBytes = 64L << 20 });
        var before = MappingsOfSize(arenaBytes);
        FaultInjector.Arm(FaultPoint.Mmap, skip: skip);
        var e = Assert.Throws<NativeCallException>(() => memory.AllocateBlock(Zone.Normal, 0));
        Assert.Equal("mmap", e.Operation);
        Assert.Equal("ENOMEM", e.ErrnoName);
        Assert.Equal(0, memory.MappedBytes(Zone.Normal));
        Assert.Empty(MappingsOfSize(arenaBytes).Except(before));

        var h = memory.AllocateBlock(Zone.Normal, 0); // the fault cleared: the same call works
        Assert.Equal(arenaBytes, memory.MappedBytes(Zone.Normal));
        // What the check looks for is there: the arena's view is a line of its own size. (Not "two new lines": an
        // arena of the earlier case, unmapped by its finalizer meanwhile, may have left `before` a line at the
        // very address this one got, which failed a CI run.)
        ulong view;
        fixed (byte* p = memory.GetSpan(h)) view = (ulong)p;
        Assert.Contains(MappingsOfSize(arenaBytes), r => r.Split('-') is [var a, var b] && Convert.ToUInt64(a, 16) <= view && view < Convert.ToUInt64(b, 16));
        memory.FreeBlock(h);
    }

    // The address ranges in /proc/self/maps exactly `bytes` long.
    private static HashSet<string> MappingsOfSize(long bytes) => File.ReadLines("/proc/self/maps")
        .Select(l => l.Split(' ', 2)[0])
        .Where(r => r.Split('-') is [var a, var b] && Convert.ToInt64(b, 16) - Convert.ToInt64(a, 16) == bytes)
        .ToHashSet();

    [Fact]
    public void A_failed_memfd_create_is_typed_and_the_next_allocation_works()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 4L << 20, Dma32Bytes = 0, NormalBytes = 64L << 20 });
        FaultInjector.Arm(FaultPoint.MemfdCreate);
        Assert.Equal("EMFILE", Assert.Throws<NativeCallException>(() => memory.AllocateBlock(Zone.Normal, 0)).ErrnoName);
        FaultInjector.Arm(FaultPoint.Ftruncate);
        Assert.Equal("ENOSPC", Assert.Throws<NativeCallException>(() => memory.AllocateBlock(Zone.Normal, 0)).ErrnoName);
        Assert.Equal(0, memory.MappedBytes(Zone.Normal));
        memory.FreeBlock(memory.AllocateBlock(Zone.Normal, 0));
    }
}
