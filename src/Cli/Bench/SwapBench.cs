using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Tt;

namespace PagePool.Cli.Bench;

/// <summary>
/// Swap of one large buffer to the file store, against the floors it cannot beat: memcpy of the same bytes, and the
/// same bytes written to and read back from a file in the same folder with plain write/read, flushed to the disk and
/// dropped from the page cache (fdatasync + POSIX_FADV_DONTNEED) so both sides really go through the disk.
/// </summary>
internal static unsafe partial class SwapBench
{
    private const int POSIX_FADV_DONTNEED = 4;

    internal static void Run(BenchContext ctx)
    {
        long bytes = ctx.Quick ? 64L << 20 : 256L << 20;
        string size = ctx.Quick ? "64m" : "256m";
        string dir = Path.GetTempPath();
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 64L << 20, Dma32Bytes = 0, NormalBytes = 2 * bytes + (128L << 20) });
        using var pool = new PoolAllocator(memory);
        using var store = SwapStore.CreateFile(dir);
        var accounting = new BufferAccounting(pool, store, new AccountingOptions { PageLimitBytes = 2 * bytes });
        using var buffer = new PageArray(accounting, (int)(bytes >> PhysicalMemory.PageShift), CachingMode.WriteBack);
        buffer.Populate();
        var chunk = new byte[1 << 20];
        new Random(1).NextBytes(chunk);
        for (long o = 0; o < bytes; o += chunk.Length) buffer.Write(o, chunk);

        var outs = new List<double>();
        var ins = new List<double>();
        Samples roundtrip = ctx.Median(() =>
        {
            long t0 = Stopwatch.GetTimestamp();
            buffer.SwapOut();
            double tOut = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            long t1 = Stopwatch.GetTimestamp();
            buffer.Populate();
            double tIn = Stopwatch.GetElapsedTime(t1).TotalMilliseconds;
            outs.Add(tOut);
            ins.Add(tIn);
            return 2.0 * bytes / ((tOut + tIn) / 1e3) / 1e9;
        });
        double writes = store.WriteTime.TotalMilliseconds, reads = store.ReadTime.TotalMilliseconds;
        ctx.Note($"swap: of {outs.Sum() + ins.Sum():0} ms swapping, store writes took {writes:0} ms (the rest of swap-out, {outs.Sum() - writes:0} ms, "
                 + $"is what giving the pages back to the system adds beyond the writes it overlaps) and store reads {reads:0} ms (faulting in the fresh destination pages included; "
                 + $"the rest of swap-in, {ins.Sum() - reads:0} ms, allocates and maps)");
        var probe = new byte[chunk.Length];
        buffer.Read(bytes - chunk.Length, probe);
        if (!probe.AsSpan().SequenceEqual(chunk))
            throw new InvalidOperationException("swap bench: the buffer did not read back as written after its round trips.");
        // Every repetition is kept (the gate tests repetitions); the first of outs and ins is the warm-up.
        ctx.Add($"swap.out_{size}.ms", new Samples(outs.Skip(1)), $"swap out {size[..^1]} MiB to the file store ({store.Description})");
        ctx.Add($"swap.in_{size}.ms", new Samples(ins.Skip(1)), $"swap {size[..^1]} MiB back in (populate)");
        ctx.Add("swap.roundtrip.gbps", roundtrip, "bytes out plus bytes in over the time of both, file store");

        byte* a = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 4096), b = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 4096);
        try
        {
            new Span<byte>(a, chunk.Length).Fill(1);
            for (long o = 0; o < bytes; o += chunk.Length) Buffer.MemoryCopy(a, a + o, chunk.Length, chunk.Length);
            NativeMemory.Clear(b, (nuint)bytes);
            Samples memcpy = ctx.Median(() =>
            {
                long t0 = Stopwatch.GetTimestamp();
                Buffer.MemoryCopy(a, b, bytes, bytes);
                return bytes / Stopwatch.GetElapsedTime(t0).TotalSeconds / 1e9;
            });
            ctx.Add("baseline.memcpy.gbps", memcpy, $"memcpy of the same {bytes >> 20} MiB");
            ctx.Add("baseline.file_write_read.gbps", FileWriteRead(ctx, dir, a, bytes),
                "the same bytes written and read back through a file in the same folder: write + fdatasync, drop the cache, read");
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(b);
        }
        double fileGbps = ctx.Metrics.Last().Value, trip = roundtrip.Median;
        if (trip > 0) ctx.Note($"swap.roundtrip / baseline.file_write_read = {trip / fileGbps:0.00} (target >= 0.8)");
        Samples refaults = RefaultAndPunch(ctx, bytes);
        double refault = refaults;
        ctx.Add($"baseline.refault_punch_{size}.ms", refaults,
            $"the kernel alone: fault in {size[..^1]} MiB of fresh memfd pages (MADV_POPULATE_WRITE) and punch them out again");
        // A swap that really frees memory pays the disk plus the kernel's refault and punch of the same bytes.
        double floorSeconds = 2.0 * bytes / (fileGbps * 1e9) + refault / 1e3;
        if (trip > 0)
            ctx.Note($"swap floor (file write+read plus refault and punch) = {2.0 * bytes / floorSeconds / 1e9:0.000} GB/s; swap.roundtrip / floor = {trip * floorSeconds / (2.0 * bytes / 1e9):0.00}");
    }

    // Time to fault in and punch out a fresh memfd region of the buffer's size: what a swap-in must fault and a
    // swap-out must punch, with no pool, no disk and no copy.
    private static Samples RefaultAndPunch(BenchContext ctx, long bytes)
    {
        int fd = memfd_create("pagepool-bench", 0);
        if (fd < 0 || ftruncate(fd, bytes) != 0) throw new InvalidOperationException($"swap bench: a {bytes >> 20} MiB memfd could not be made (errno {Marshal.GetLastPInvokeError()}).");
        nint p = mmap(0, (nuint)bytes, 3 /* PROT_READ | PROT_WRITE */, 1 /* MAP_SHARED */, fd, 0);
        try
        {
            if (p == -1) throw new InvalidOperationException($"swap bench: mapping a {bytes >> 20} MiB memfd failed (errno {Marshal.GetLastPInvokeError()}).");
            return ctx.Median(() =>
            {
                long t0 = Stopwatch.GetTimestamp();
                if (madvise(p, (nuint)bytes, 23 /* MADV_POPULATE_WRITE */) != 0) new Span<byte>((void*)p, checked((int)Math.Min(bytes, int.MaxValue))).Clear();
                fallocate(fd, 3 /* FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE */, 0, bytes);
                return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            });
        }
        finally
        {
            if (p != -1) munmap(p, (nuint)bytes);
            close(fd);
        }
    }

    private static Samples FileWriteRead(BenchContext ctx, string dir, byte* data, long bytes)
    {
        string path = Path.Combine(dir, $"pagepool-bench-{Environment.ProcessId}.tmp");
        try
        {
            using var file = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
            int length = (int)Math.Min(bytes, int.MaxValue);
            return ctx.Median(() =>
            {
                var span = new Span<byte>(data, length);
                long t0 = Stopwatch.GetTimestamp();
                RandomAccess.Write(file, span, 0);
                RandomAccess.FlushToDisk(file);
                DropCache(file, bytes);
                int read = 0;
                while (read < span.Length) read += RandomAccess.Read(file, span[read..], read);
                DropCache(file, bytes);
                return 2.0 * bytes / Stopwatch.GetElapsedTime(t0).TotalSeconds / 1e9;
            });
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void DropCache(SafeFileHandle file, long bytes) => posix_fadvise((int)file.DangerousGetHandle(), 0, bytes, POSIX_FADV_DONTNEED);

    [LibraryImport("libc")] private static partial int posix_fadvise(int fd, long offset, long length, int advice);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int memfd_create(string name, uint flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int ftruncate(int fd, long length);
    [LibraryImport("libc", SetLastError = true)] private static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);
    [LibraryImport("libc")] private static partial int munmap(nint addr, nuint length);
    [LibraryImport("libc")] private static partial int madvise(nint addr, nuint length, int advice);
    [LibraryImport("libc")] private static partial int fallocate(int fd, int mode, long offset, long length);
    [LibraryImport("libc")] private static partial int close(int fd);
}
