using PagePool.Dma;
using PagePool.Memory;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>A small machine for DMA tests: little memory, a small swiotlb, the checker on (as tests run it by default).</summary>
internal sealed class DmaTestMachine : IDisposable
{
    internal readonly PhysicalMemory Memory;
    internal readonly DmaPlatform Platform;

    internal DmaTestMachine(bool xen = false, bool deferred = false, bool checker = true, long swiotlb = 4L << 20,
                            TimeSpan? flushTimeout = null, int flushEntries = 250)
        : this(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 32L << 20, NormalBytes = 32L << 20, Xen = xen, XenSeed = 42 },
               new DmaPlatformOptions
               {
                   SwiotlbBytes = swiotlb, DeferredFlush = deferred, Checker = checker,
                   FlushTimeout = flushTimeout ?? TimeSpan.FromMilliseconds(10), FlushQueueEntries = flushEntries,
               })
    {
    }

    /// <summary>A machine built with exactly these options (tests of the defaults leave unset what they test).</summary>
    internal DmaTestMachine(MemoryOptions memory, DmaPlatformOptions platform)
    {
        Memory = new PhysicalMemory(memory);
        Platform = new DmaPlatform(Memory, platform);
    }

    internal DmaChecker Checker => Platform.Checker!;

    internal DmaDevice Device(string name, DmaOpsKind kind, int maskBits = 64, bool coherent = true, int maxSegment = 64 << 10)
        => Platform.CreateDevice(new DmaDeviceOptions { Name = name, OpsKind = kind, MaskBits = maskBits, Coherent = coherent, MaxSegmentSize = maxSegment });

    internal static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    public void Dispose()
    {
        Platform.Dispose();
        Memory.Dispose();
    }
}
