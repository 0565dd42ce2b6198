// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using System.Runtime.InteropServices;
using PagePool.Memory;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed unsafe class CpuMappingTests
{
    private static void WritePattern(byte* p, long bytes, ulong seed)
    {
        var rng = new Random((int)seed);
        for (long i = 0; i < bytes; i += 8) *(ulong*)(p + i) = (ulong)rng.NextInt64();
    }

    private static bool HasPattern(byte* p, long bytes, ulong seed)
    {
        var rng = new Random((int)seed);
        for (long i = 0; i < bytes; i += 8) if (*(ulong*)(p + i) != (ulong)rng.NextInt64()) return false;
        return true;
    }

    [Fact]
    public void One_pointer_reads_and_writes_the_buffer_across_populate_swap_and_vram_moves()
    {
        using var f = new TtFixture();
        using var vram = new VramRegion(8L << 20);
        using var t = f.New(700, CachingMode.WriteCombined);
        t.Populate();
        byte* p = (byte*)t.CpuAddress;
        WritePattern(p, t.Bytes, 1);
        Assert.Equal(TtFixture.Checksum(new ReadOnlySpan<byte>(p, (int)t.Bytes)), TtFixture.Checksum(t)); // the pointer is the pages

        t.SwapOut();
        t.Populate(); // explicit restore: the same pointer sees the same bytes
        Assert.Equal((nint)p, t.CpuAddress);
        Assert.True(HasPattern(p, t.Bytes, 1));

        t.MoveToVram(vram);
        Assert.Equal(TtState.DeviceLocal, t.State);
        Assert.Equal(0, f.PoolInUse);
        Assert.True(HasPattern(p, t.Bytes, 1));
        WritePattern(p, t.Bytes, 2); // writes land in VRAM
        t.MoveToSystem();
        Assert.Equal(TtState.Populated, t.State);
        Assert.True(HasPattern(p, t.Bytes, 2));
        Assert.Equal(8L << 20, vram.FreeBytes);
        var back = new byte[t.Bytes];
        t.Read(0, back);
        Assert.True(HasPatternBytes(back, 2));
    }

    private static bool HasPatternBytes(byte[] bytes, ulong seed)
    {
        fixed (byte* b = bytes) return HasPattern(b, bytes.Length, seed);
    }

    // Absent pages are touched from native code (libc memcpy/memset): the thread waits in the kernel in preemptive
    // mode, where a garbage collection does not wait for it (see AccountingOptions.FaultInOnAccess).
    [DllImport("libc")] private static extern void* memcpy(void* dst, void* src, nuint length);
    [DllImport("libc")] private static extern void* memset(void* dst, int value, nuint length);

    [Fact]
    public void Touching_a_swapped_out_buffer_from_native_code_faults_it_back_in()
    {
        if (!PageArray.FaultHandlingAvailable)
        {
            Console.WriteLine($"SKIPPED: {PageArray.FaultHandlingRefusedReason}; buffers must be populated before their pointer is used.");
            Assert.Skip(PageArray.FaultHandlingRefusedReason!);
        }
        using var f = new TtFixture(faultIn: true);
        using var t = f.New(300);
        t.Populate();
        byte* p = (byte*)t.CpuAddress;
        WritePattern(p, t.Bytes, 5);
        t.SwapOut();
        Assert.Equal(TtState.SwappedOut, t.State);
        byte* copy = (byte*)NativeMemory.Alloc((nuint)t.Bytes);
        try
        {
            memcpy(copy, p, (nuint)t.Bytes); // the first read faults, the handler restores the buffer
            Assert.True(HasPattern(copy, t.Bytes, 5));
        }
        finally
        {
            NativeMemory.Free(copy);
        }
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(0, f.Store.BytesInUse);
    }

    [Fact]
    public void Native_faults_resolve_while_another_thread_forces_garbage_collections()
    {
        if (!PageArray.FaultHandlingAvailable) Assert.Skip(PageArray.FaultHandlingRefusedReason!);
        using var f = new TtFixture(faultIn: true);
        using var t = f.New(64);
        t.Populate();
        byte* p = (byte*)t.CpuAddress;
        WritePattern(p, t.Bytes, 3);
        int stop = 0;
        var collector = new Thread(() => { while (Volatile.Read(ref stop) == 0) { _ = new byte[64 << 10]; GC.Collect(); } });
        collector.Start();
        byte* copy = (byte*)NativeMemory.Alloc((nuint)t.Bytes);
        try
        {
            for (int i = 0; i < 10; i++)
            {
                t.SwapOut();
                memcpy(copy, p, (nuint)t.Bytes);
                Assert.True(HasPattern(copy, t.Bytes, 3), $"round {i}");
            }
        }
        finally
        {
            Volatile.Write(ref stop, 1);
            collector.Join();
            NativeMemory.Free(copy);
        }
    }

    [Fact]
    public void Touching_an_unpopulated_buffer_from_native_code_populates_it()
    {
        if (!PageArray.FaultHandlingAvailable) Assert.Skip(PageArray.FaultHandlingRefusedReason!);
        using var f = new TtFixture(faultIn: true);
        using var t = f.New(16, flags: TtFlags.ZeroAlloc);
        byte* p = (byte*)t.CpuAddress;
        memset(p + 100, 42, 1); // faults: the handler populates, then the write lands in the buffer's page
        Assert.Equal(TtState.Populated, t.State);
        var b = new byte[1];
        t.Read(100, b);
        Assert.Equal(42, b[0]);
    }

    [Fact]
    public void Without_fault_in_a_swapped_out_range_is_inaccessible_until_populated()
    {
        using var f = new TtFixture();
        using var t = f.New(8);
        t.Populate();
        byte* p = (byte*)t.CpuAddress;
        p[0] = 9;
        t.SwapOut();
        // The range is PROT_NONE now: the kernel's view of it says so (a touch would be SIGSEGV, a program bug).
        string maps = File.ReadAllText("/proc/self/maps");
        string line = maps.Split('\n').First(l => l.StartsWith(((nuint)p).ToString("x") + "-", StringComparison.Ordinal));
        Assert.Contains("---p", line);
        t.Populate();
        Assert.Equal(9, p[0]);
    }

    [Fact]
    public void The_pointer_follows_a_copy_into_dma32_pages_for_a_32_bit_device()
    {
        using var f = new TtFixture();
        using var t = f.New(520);
        t.Populate();
        byte* p = (byte*)t.CpuAddress;
        WritePattern(p, t.Bytes, 6);
        Assert.True(t.Bind(new TestDevice("gpu32", 0xFFFF_FFFF)));
        Assert.True(HasPattern(p, t.Bytes, 6));
        p[4096] ^= 0xFF; // a write through the pointer lands in the new DMA32 page
        var b = new byte[1];
        t.Read(4096, b);
        Assert.Equal(p[4096], b[0]);
    }

    [Fact]
    public void Swap_out_from_vram_hops_through_system_memory()
    {
        using var f = new TtFixture();
        using var vram = new VramRegion(4L << 20);
        using var t = f.New(64);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 8);
        t.MoveToVram(vram);
        Assert.Equal(64, t.SwapOut());
        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(4L << 20, vram.FreeBytes);
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void A_full_vram_is_a_typed_error_and_the_buffer_stays_in_system_memory()
    {
        using var f = new TtFixture();
        using var vram = new VramRegion(64 * 4096);
        using var t = f.New(65);
        t.Populate();
        Assert.Throws<PagePoolException>(() => t.MoveToVram(vram));
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(65, f.PoolInUse);
        Assert.Throws<TtStateException>(() => t.MoveToSystem());
    }
}
