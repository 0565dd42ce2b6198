using System.Runtime.InteropServices;

namespace PagePool.Cli.Bench;

/// <summary>What the kernel and the CPU cost without PagePool: the floor every pool number is read against.</summary>
internal static unsafe partial class BaselineBench
{
    // The kernel's price of a fresh page, asked of libc directly: a baseline the library has no business exporting.
    private const int ProtReadWrite = 0x1 | 0x2, MapPrivateAnonymous = 0x02 | 0x20;

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(void* addr, nuint length);

    internal static void Run(BenchContext ctx)
    {
        int ops = ctx.Quick ? 2_000 : 10_000;
        double fresh = ctx.Median(() => BenchContext.NsPerOp(ops, () =>
        {
            byte* p = (byte*)mmap(null, 4096, ProtReadWrite, MapPrivateAnonymous, -1, 0);
            if (p == (byte*)-1) throw new InvalidOperationException($"mmap of 4 KiB failed: errno {Marshal.GetLastPInvokeError()}.");
            *p = 1; // first touch: the page fault and the kernel's zeroing are part of a fresh page's cost
            munmap(p, 4096);
        }));
        ctx.Add("baseline.mmap_munmap.ns", fresh, "mmap 4 KiB anonymous, first touch, munmap");

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
