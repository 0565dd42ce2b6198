using System.Runtime.InteropServices;
using PagePool.Native;

namespace PagePool.Cli.Bench;

/// <summary>What the kernel and the CPU cost without PagePool: the floor every pool number is read against.</summary>
internal static unsafe class BaselineBench
{
    internal static void Run(BenchContext ctx)
    {
        int ops = ctx.Quick ? 2_000 : 10_000;
        double mmap = ctx.Median(() => BenchContext.NsPerOp(ops, () =>
        {
            byte* p = Libc.Mmap(null, 4096, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
            *p = 1; // first touch: the page fault and the kernel's zeroing are part of a fresh page's cost
            Libc.Munmap(p, 4096);
        }));
        ctx.Add("baseline.mmap_munmap.ns", mmap, "mmap 4 KiB anonymous, first touch, munmap");

        byte* buf = (byte*)NativeMemory.AlignedAlloc(2 << 20, 4096);
        try
        {
            byte* b = buf;
            int clears = ctx.Quick ? 100_000 : 500_000;
            double m4 = ctx.Median(() => BenchContext.NsPerOp(clears, () => NativeMemory.Clear(b, 4096)));
            ctx.Add("baseline.memset_4k.ns", m4, "clear 4 KiB of warm, cached memory");
            int big = ctx.Quick ? 500 : 2_000;
            double m2 = ctx.Median(() => BenchContext.NsPerOp(big, () => NativeMemory.Clear(b, 2 << 20))) / 1000;
            ctx.Add("baseline.memset_2m.us", m2, "clear 2 MiB (one 512-page buffer)");
        }
        finally
        {
            NativeMemory.AlignedFree(buf);
        }
    }
}
