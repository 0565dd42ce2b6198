using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Shrinker;

namespace PagePool.Cli.Bench;

/// <summary>
/// Reclaim as a user sees it: how fast pressure signalled to the shrinker registry turns into memory the kernel
/// has back (measured from /proc/self/statm, not from the pool's counters), and whether a pooled page is found
/// from another CPU instead of a fresh one being taken.
/// </summary>
internal static partial class ReclaimBench
{
    private const long PooledBytes = 256L << 20;

    // The runtime's own RSS moves while the benchmark waits (GC commit, code compiled on the way): measured at
    // 1 to 1.5 MiB here. The wait ends when RSS fell by the pooled bytes less this much; every pooled page is
    // gone by then (the pool counts 0 and the memfd mappings hold nothing).
    private const long RuntimeNoiseBytes = 2L << 20;

    internal static void Run(BenchContext ctx)
    {
        ctx.Add("shrink.release_256m.ms", ctx.Median(ReleaseUnderPressure),
            "256 MiB of pooled WC pages, Critical pressure signalled to the registry: ms until RSS (smaps_rollup) fell by 254 MiB");
        ctx.Add("shrink.release_256m.kernel_floor.ms", ctx.Median(KernelFloor),
            "the kernel alone: punch 256 MiB out of a memfd mapped twice (written through one map, read through the other), 2 MiB at a time");
        int ops = ctx.Quick ? 20_000 : 100_000;
        ctx.Add("pool.miss_while_pooled.ratio", MissWhilePooled(ops),
            $"producer/consumer on two CPUs ({ops:N0} pages): fresh pages taken while the pool held one of the type, over all allocations");
    }

    private static double ReleaseUnderPressure()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 1L << 30 });
        var registry = new ShrinkerRegistry();
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 1L << 40 }, registry);
        using var reclaim = new ReclaimThread(registry, [], TimeSpan.FromSeconds(10));
        reclaim.Start();

        int pages = (int)(PooledBytes >> PhysicalMemory.PageShift);
        var blocks = new PageHandle[pages];

        // A small round first, so the pass's code is compiled and its stacks touched before RSS is watched.
        Pool(pool, blocks.AsSpan(0, 4), 4 << 9);
        reclaim.Signal(MemoryPressure.Critical);
        while (pool.Count() > 0) Thread.Sleep(1);

        Pool(pool, blocks, pages);

        GC.Collect();
        long before = RolledUpRss();
        long t0 = Stopwatch.GetTimestamp();
        reclaim.Signal(MemoryPressure.Critical);
        while (before - RolledUpRss() < PooledBytes - RuntimeNoiseBytes)
        {
            if (Stopwatch.GetElapsedTime(t0) > TimeSpan.FromSeconds(10))
            if (Stopwatch.GetElapsedTime(t0) > TimeSpan.FromSeconds(10))
                throw new InvalidOperationException($"RSS fell by only {(before - RolledUpRss()) >> 20} MiB in 10 s of Critical pressure ({reclaim.Freed:N0} pages freed).");
            Thread.Sleep(5); // each read walks the page tables under the mmap lock the reclaim needs too
        }
        return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
    }

    // Allocate, write every byte (resident, as a user's buffers are) and release into the pool.
    private static void Pool(PoolAllocator pool, Span<PageHandle> blocks, int pages)
    {
        int n = pool.Allocate(pages, CachingMode.WriteCombined, Zone.Normal, blocks);
        foreach (var b in blocks[..n]) pool.Memory.GetSpan(b).Fill(0x5A);
        pool.Release(blocks[..n], CachingMode.WriteCombined);
    }

    // The consumer allocates, the producer releases what it is handed; with the two on different CPUs, released
    // pages land in the producer's core cache. A miss while the pool holds a page of the type means the page
    // was not reachable from the consumer's CPU. Only the consumer takes, so a page pooled before its call is
    // still pooled during it.
    private static double MissWhilePooled(int ops)
    {
        using var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 1L << 30 });
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 1L << 40 });
        var handoff = new BlockingCollection<PageHandle>(boundedCapacity: 256);
        long missesWhilePooled = 0;
        int cpus = Environment.ProcessorCount;

        var producer = new Thread(() =>
        {
            CpuAffinity.PinTo(1);
            foreach (var h in handoff.GetConsumingEnumerable()) pool.ReleasePage(h, CachingMode.WriteCombined);
        });
        producer.Start();
        CpuAffinity.PinTo(0);
        for (int i = 0; i < ops; i++)
        {
            bool pooled = pool.Count() > 0;
            long misses = Misses(pool);
            var h = pool.AllocatePage(CachingMode.WriteCombined, Zone.Normal, AllocationFlags.NoClear);
            if (pooled && Misses(pool) != misses) missesWhilePooled++;
            handoff.Add(h);
        }
        handoff.CompleteAdding();
        producer.Join();
        CpuAffinity.PinTo(-1);
        return (double)missesWhilePooled / ops;
    }

    // What the kernel needs to take 256 MiB of shmem back from a double mapping, as an arena is mapped: the floor
    // under shrink.release_256m.ms on this machine.
    private static unsafe double KernelFloor()
    {
        const int FallocPunchHole = 2, FallocKeepSize = 1, ProtRw = 3, MapShared = 1;
        int fd = MemfdCreate("pagepool-floor", 1);
        if (fd < 0 || Ftruncate(fd, PooledBytes) != 0) throw new InvalidOperationException("memfd for the kernel floor failed.");
        byte* view = (byte*)Mmap(null, (nuint)PooledBytes, ProtRw, MapShared, fd, 0);
        byte* alias = (byte*)Mmap(null, (nuint)PooledBytes, ProtRw, MapShared, fd, 0);
        long sum = 0;
        for (long off = 0; off < PooledBytes; off += 4096) { view[off] = 1; sum += alias[off]; }
        long t0 = Stopwatch.GetTimestamp();
        for (long off = 0; off < PooledBytes; off += 2L << 20)
            Fallocate(fd, FallocPunchHole | FallocKeepSize, off, 2L << 20);
        double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        Munmap(view, (nuint)PooledBytes);
        Munmap(alias, (nuint)PooledBytes);
        Close(fd);
        GC.KeepAlive(sum);
        return ms;
    }

    [LibraryImport("libc", EntryPoint = "memfd_create", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MemfdCreate(string name, uint flags);
    [LibraryImport("libc", EntryPoint = "ftruncate")]
    private static partial int Ftruncate(int fd, long length);
    [LibraryImport("libc", EntryPoint = "mmap")]
    private static unsafe partial nint Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);
    [LibraryImport("libc", EntryPoint = "munmap")]
    private static unsafe partial int Munmap(void* addr, nuint length);
    [LibraryImport("libc", EntryPoint = "fallocate")]
    private static partial int Fallocate(int fd, int mode, long offset, long length);
    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    // Rss from /proc/self/smaps_rollup: the kernel walks the page tables, so it is exact at the moment of reading
    // (statm's counters are per-CPU caches that catch up later; they lagged by up to 20 MiB here). Parsed from a
    // stack buffer: a polling loop that allocated would grow the very RSS it watches.
    private static long RolledUpRss()
    {
        Span<byte> buf = stackalloc byte[4096];
        using var f = File.OpenHandle("/proc/self/smaps_rollup");
        int n = RandomAccess.Read(f, buf, 0);
        int at = buf[..n].IndexOf("\nRss:"u8);
        if (at < 0) throw new InvalidOperationException("/proc/self/smaps_rollup has no Rss line.");
        long kb = 0;
        for (int i = at + 5; i < n && buf[i] != (byte)'k'; i++)
            if (buf[i] is >= (byte)'0' and <= (byte)'9') kb = kb * 10 + (buf[i] - '0');
        return kb * 1024;
    }

    private static long Misses(PoolAllocator pool)
    {
        long n = 0;
        foreach (var s in pool.Statistics()) n += s.Misses;
        return n;
    }
}
