using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Perf;

/// <summary>
/// The pool's main paths with BenchmarkDotNet's statistics: the hit per caching mode (with and without the
/// clear), a 2 MiB populate, a miss and the unpooled write-back path, against NativeMemory (the baseline row).
/// The same operations as 'pagepool bench' (pool, policies groups); see README.md (perf) for how they differ.
/// </summary>
[MemoryDiagnoser]
public unsafe class PoolBenchmarks
{
    private PhysicalMemory _memory = null!;
    private PoolAllocator _pool = null!, _unpooled = null!, _noWriteBack = null!;
    private readonly PageHandle[] _blocks = new PageHandle[512];

    [GlobalSetup]
    public void Setup()
    {
        _memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 1L << 30 });
        _pool = new PoolAllocator(_memory);
        _unpooled = new PoolAllocator(_memory, new PoolOptions { LimitBytes = 0, MagazinePages = 1 });
        _noWriteBack = new PoolAllocator(_memory, new PoolOptions { PoolWriteBack = false });
        foreach (var c in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
        {
            int n = _pool.Allocate(512, c, Zone.Normal, _blocks);
            _pool.Release(_blocks.AsSpan(0, n), c);
            _pool.ReleasePage(_pool.AllocatePage(c), c);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _noWriteBack.Dispose();
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

    [Benchmark(Description = "pool hit WB 4K NoClear")]
    public void HitWriteBackNoClear()
        => _pool.ReleasePage(_pool.AllocatePage(CachingMode.WriteBack, Zone.Normal, AllocationFlags.NoClear), CachingMode.WriteBack);

    [Benchmark(Description = "pool hit WC 4K")]
    public void HitWriteCombined() => _pool.ReleasePage(_pool.AllocatePage(CachingMode.WriteCombined), CachingMode.WriteCombined);

    [Benchmark(Description = "pool hit UC 4K")]
    public void HitUncached() => _pool.ReleasePage(_pool.AllocatePage(CachingMode.Uncached), CachingMode.Uncached);

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

    [Benchmark(Description = "WB 4K, PoolWriteBack off (fresh + punch)")]
    public void NoPoolWriteBack() => _noWriteBack.ReleasePage(_noWriteBack.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);
}
