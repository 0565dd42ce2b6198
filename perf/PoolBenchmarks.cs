using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Perf;

/// <summary>The pool's hit, populate and miss paths against NativeMemory, with BenchmarkDotNet's statistics.</summary>
[MemoryDiagnoser]
public unsafe class PoolBenchmarks
{
    private PhysicalMemory _memory = null!;
    private PoolAllocator _pool = null!, _unpooled = null!;
    private readonly PageHandle[] _blocks = new PageHandle[512];

    [GlobalSetup]
    public void Setup()
    {
        _memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 1L << 30 });
        _pool = new PoolAllocator(_memory);
        _unpooled = new PoolAllocator(_memory, new PoolOptions { LimitBytes = 0, MagazinePages = 1 });
        foreach (var c in new[] { CachingMode.WriteBack, CachingMode.WriteCombined })
        {
            int n = _pool.Allocate(512, c, Zone.Normal, _blocks);
            _pool.Release(_blocks.AsSpan(0, n), c);
            _pool.ReleasePage(_pool.AllocatePage(c), c);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _unpooled.Dispose();
        _pool.Dispose();
        _memory.Dispose();
    }

    [Benchmark(Baseline = true, Description = "NativeMemory aligned 4K + clear + free")]
    public void NativeAlignedZero()
    {
        void* p = NativeMemory.AlignedAlloc(4096, 4096);
        NativeMemory.Clear(p, 4096);
        NativeMemory.AlignedFree(p);
    }

    [Benchmark(Description = "pool hit WB 4K")]
    public void HitWriteBack() => _pool.ReleasePage(_pool.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);

    [Benchmark(Description = "pool hit WC 4K")]
    public void HitWriteCombined() => _pool.ReleasePage(_pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined);

    [Benchmark(Description = "pool populate 2 MiB WC")]
    public void Populate2M()
    {
        int n = _pool.Allocate(512, CachingMode.WriteCombined, Zone.Normal, _blocks);
        _pool.Release(_blocks.AsSpan(0, n), CachingMode.WriteCombined);
    }

    [Benchmark(Description = "miss WC 4K (fresh + convert + return)")]
    public void MissWriteCombined()
    {
        _unpooled.ReleasePage(_unpooled.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined);
        _unpooled.Scan(long.MaxValue);
    }
}
