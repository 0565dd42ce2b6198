using PagePool.Memory;
using System.Runtime.InteropServices;

namespace PagePool.Cli.Bench;

/// <summary>What the kernel and the CPU cost without PagePool: the floor every pool number is read against.</summary>
internal static unsafe class BaselineBench
{
    internal static void Run(BenchContext ctx)
    {
        int ops = ctx.Quick ? 2_000 : 10_000;
        var mmap = ctx.NsPerOp("baseline.mmap_munmap.ns", ops, () =>
        {
            byte* p = AnonymousMapping.Map(4096);
            *p = 1; // first touch: the page fault and the kernel's zeroing are part of a fresh page's cost
            AnonymousMapping.Unmap(p, 4096);
        });
        ctx.Add("baseline.mmap_munmap.ns", mmap, "mmap 4 KiB anonymous, first touch, munmap");

        byte* buf = (byte*)NativeMemory.AlignedAlloc(2 << 20, 4096);
        try
        {
            byte* b = buf;
            int clears = ctx.Quick ? 100_000 : 500_000;
            ctx.Add("baseline.memset_4k.ns", ctx.NsPerOp("baseline.memset_4k.ns", clears, () => NativeMemory.Clear(b, 4096)),
                "clear 4 KiB of warm, cached memory");
            int big = ctx.Quick ? 500 : 2_000;
            ctx.Add("baseline.memset_2m.us", ctx.NsPerOp("baseline.memset_2m.us", big, () => NativeMemory.Clear(b, 2 << 20)) / 1000,
                "clear 2 MiB (one 512-page buffer)");

            // The floors of the write-combined paths: the pool's streaming stores and fence, nothing else. A WC
            // clear goes to DRAM, so pool.hit.wc is held to these, not to a clear that stays in cache.
            int ntClears = ctx.Quick ? 20_000 : 100_000;
            ctx.Add("baseline.ntclear_4k.ns", ctx.NsPerOp("baseline.ntclear_4k.ns", ntClears, () => CachingStores.ClearPages(CachingMode.WriteCombined, new Span<byte>(b, 4096))),
                "clear 4 KiB with streaming stores + sfence (the pool's WC clear, alone)");
            ctx.Add("baseline.ntclear_2m.us", ctx.NsPerOp("baseline.ntclear_2m.us", big, () => CachingStores.ClearPages(CachingMode.WriteCombined, new Span<byte>(b, 2 << 20))) / 1000,
                "clear 2 MiB with streaming stores + sfence (the floor of a 2 MiB WC populate)");
        }
        finally
        {
            NativeMemory.AlignedFree(buf);
        }
    }
}
