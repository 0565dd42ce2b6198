using BenchmarkDotNet.Attributes;
using PagePool.Memory;

namespace PagePool.Perf;

/// <summary>
/// Caching changes one page at a time against one batched run of 512 pages (what the pool exists to avoid
/// paying on every allocation). Per operation of 512 pages: divide by 512 to compare with 'pagepool bench'.
/// </summary>
public class CachingBenchmarks
{
    private PhysicalMemory _memory = null!;
    private readonly PageHandle[] _pages = new PageHandle[512];

    [GlobalSetup]
    public void Setup()
    {
        _memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 256L << 20 });
        for (int i = 0; i < _pages.Length; i++) _pages[i] = _memory.AllocateBlock(Zone.Normal, 0);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var p in _pages) _memory.FreeBlock(p);
        _memory.Dispose();
    }

    [Benchmark(Baseline = true, Description = "512 pages WB->WC->WB, one page at a time")]
    public void Single()
    {
        foreach (var p in _pages)
        {
            _memory.SetCaching(p, CachingMode.WriteCombined);
            _memory.SetCaching(p, CachingMode.WriteBack);
        }
    }

    [Benchmark(Description = "512 pages WB->WC->WB, batched")]
    public void Batched()
    {
        _memory.SetCaching(_pages, CachingMode.WriteCombined);
        _memory.SetCaching(_pages, CachingMode.WriteBack);
    }
}
