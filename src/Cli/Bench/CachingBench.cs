using System.Diagnostics;
using PagePool.Memory;

namespace PagePool.Cli.Bench;

/// <summary>
/// The cost of caching changes, one page at a time versus one batched run: the reason the pool exists.
/// Pages are dirtied before every repetition (untimed) so each flush has real lines to write back.
/// </summary>
internal static class CachingBench
{
    private const int RunPages = 512; // a 2 MiB buffer

    internal static void Run(BenchContext ctx)
    {
        using var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 256L << 20 });
        var pages = new PageHandle[RunPages];
        for (int i = 0; i < pages.Length; i++) pages[i] = memory.AllocateBlock(Zone.Normal, 0);

        var single = ctx.Median(() =>
        {
            Dirty(memory, pages);
            long t0 = Stopwatch.GetTimestamp();
            foreach (var p in pages)
            {
                memory.SetCaching(p, CachingMode.WriteCombined);
                memory.SetCaching(p, CachingMode.WriteBack);
            }
            return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / pages.Length;
        });
        int runs = 0;
        var batched = ctx.Median(() =>
        {
            Dirty(memory, pages);
            long t0 = Stopwatch.GetTimestamp();
            runs = memory.SetCaching(pages, CachingMode.WriteCombined);
            memory.SetCaching(pages, CachingMode.WriteBack);
            return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / pages.Length;
        });
        ctx.Add("caching.single.ns_per_page", single, "one page WB->WC->WB: flush, fence and two mprotects per page");
        ctx.Add("caching.batched.ns_per_page", batched, $"512 pages WB->WC->WB as one batch ({runs} page-table run(s), one fence)");
        foreach (var p in pages) memory.FreeBlock(p);
    }

    private static void Dirty(PhysicalMemory memory, PageHandle[] pages)
    {
        foreach (var p in pages) memory.GetSpan(p).Fill(0xA5);
    }
}
