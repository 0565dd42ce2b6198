// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using System.Runtime.InteropServices;
using PagePool.Faults;
using PagePool.Memory;
using PagePool.Native;
using PagePool.Pool;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>
/// The swap pipelines: a swap-out writing 8 MiB parts while helpers give written parts back to the system (and its
/// roll back when a later step fails), and a swap-in reading 2 MiB chunks behind helpers faulting in the destination.
/// Every failure part way leaves the buffer's bytes, its CPU mapping, the accounting, the pool and the store as they
/// were. Faults are armed for the test's own thread only.
/// </summary>
public sealed unsafe class SwapPipelineTests : IDisposable
{
    private const long Mib = 1L << 20;
    private const int ThreeParts = (int)(3 * PageArray.BackupPartBytes / 4096);

    public void Dispose() => FaultInjector.DisarmAll();

    // ---- swap-out -------------------------------------------------------------------------------------------

    [Fact]
    public void A_cpu_mapping_change_failing_part_way_through_a_swap_out_leaves_every_page_mapped_and_nothing_reserved()
    {
        using var f = new TtFixture();
        using var t = f.New(ThreeParts);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 32);
        byte* p = (byte*)t.CpuAddress;
        long charged = f.Accounting.Pages, inUse = f.PoolInUse;
        FaultInjector.Arm(FaultPoint.Mmap, skip: 1); // the first part's second segment: its first is unmapped already

        Assert.ThrowsAny<NativeCallException>(() => t.SwapOut());

        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(sum, TtFixture.Checksum(t));
        var seen = new byte[t.Bytes];
        Assert.True(TryReadMapped(p, seen), "part of the CPU mapping stayed inaccessible on a populated buffer");
        Assert.Equal(sum, TtFixture.Checksum(seen));
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(charged, f.Accounting.Pages);
        Assert.Equal(inUse, f.PoolInUse);

        Assert.Equal(ThreeParts, t.SwapOut()); // works once the fault cleared
        t.Populate();
        Assert.True(TryReadMapped(p, seen));
        Assert.Equal(sum, TtFixture.Checksum(seen));
    }

    [Fact]
    public void A_refused_store_punch_during_the_roll_back_of_a_failed_swap_out_leaves_the_buffer_as_it_was()
    {
        // The memfd store punches every freed extent; a refused punch must not stop the roll back half way.
        using var f = new TtFixture(memfd: true);
        using var t = f.New(ThreeParts);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 33);
        long charged = f.Accounting.Pages, inUse = f.PoolInUse;
        FaultInjector.Arm(FaultPoint.SwapWrite, skip: 2);
        FaultInjector.Arm(FaultPoint.Fallocate, count: int.MaxValue);

        Assert.Throws<SwapStoreException>(() => t.SwapOut());

        FaultInjector.DisarmAll();
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(ThreeParts, t.ResidentPages);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(charged, f.Accounting.Pages);
        Assert.Equal(inUse, f.PoolInUse);
        Assert.Equal(ThreeParts, t.SwapOut());
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void A_store_disposed_in_the_middle_of_a_swap_out_leaves_a_consistent_buffer_and_dispose_uncharges_everything()
    {
        var store = new HookedStore();
        using var f = new TtFixture(store: store);
        var t = f.New(ThreeParts);
        t.Populate();
        TtFixture.Fill(t, 34);
        store.AfterWrite = n => { if (n == 2) store.Dispose(); }; // two parts written and given back, then the store goes

        Assert.Throws<ObjectDisposedException>(() => t.SwapOut());

        // The two parts given back went with the store; the third part's pages are still the buffer's.
        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(t.ResidentPages, f.Accounting.Pages);
        Assert.Equal(ThreeParts - t.ResidentPages, t.SwappedPages);
        t.Dispose();
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.PoolInUse);
    }

    [Fact]
    public void A_failed_swap_out_of_a_buffer_already_swapped_out_in_part_keeps_the_earlier_backup_and_every_byte()
    {
        using var f = new TtFixture();
        using var t = f.New(ThreeParts + 1024, CachingMode.Uncached, Zone.Dma32);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 35);
        long first = t.SwapOut(1024); // a partial backup first
        Assert.True(first > 0);
        long storeInUse = f.Store.BytesInUse, charged = f.Accounting.Pages, dma32 = f.Accounting.Dma32Pages, inUse = f.PoolInUse;
        FaultInjector.Arm(FaultPoint.SwapWrite, skip: 2);

        Assert.Throws<SwapStoreException>(() => t.SwapOut());

        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(first, t.SwappedPages);
        Assert.Equal(storeInUse, f.Store.BytesInUse);
        Assert.Equal(charged, f.Accounting.Pages);
        Assert.Equal(dma32, f.Accounting.Dma32Pages);
        Assert.Equal(inUse, f.PoolInUse);
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(0, f.Store.BytesInUse);
    }

    [Fact]
    public void An_arena_mapping_failing_in_the_middle_of_a_restore_batch_loses_no_byte_and_leaks_no_page()
    {
        using var f = new TtFixture(restoreBatch: 64 * Mib);
        using var t = f.New(ThreeParts);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 38);
        byte* p = (byte*)t.CpuAddress;
        t.SwapOut();
        FaultInjector.Arm(FaultPoint.Mmap, skip: 1); // the batch's new pages: the second arena mapped for them is refused

        Assert.ThrowsAny<NativeCallException>(() => t.Populate());

        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(t.ResidentPages, f.Accounting.Pages);
        Assert.Equal(t.ResidentPages, f.PoolInUse);
        Assert.Equal(t.SwappedPages * 4096, f.Store.BytesInUse);
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
        var seen = new byte[t.Bytes];
        Assert.True(TryReadMapped(p, seen));
        Assert.Equal(sum, TtFixture.Checksum(seen));
        Assert.Equal(ThreeParts, f.PoolInUse);
        Assert.Equal(0, f.Store.BytesInUse);
    }

    [Fact]
    public void With_fault_in_on_access_a_buffer_left_swapped_out_in_part_by_a_failed_swap_out_faults_back_in_when_touched()
    {
        Assert.SkipUnless(PageArray.FaultHandlingAvailable, PageArray.FaultHandlingRefusedReason ?? "");
        using var f = new TtFixture(faultIn: true);
        using var t = f.New(ThreeParts);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 39);
        byte* p = (byte*)t.CpuAddress;
        FaultInjector.Arm(FaultPoint.SwapWrite, skip: 2);
        f.Store.Faults.FailReads(1);

        Assert.Throws<SwapStoreException>(() => t.SwapOut());

        Assert.Equal(TtState.SwappedOut, t.State);
        var seen = new byte[t.Bytes];
        fixed (byte* s = seen) Buffer.MemoryCopy(p, s, seen.Length, seen.Length); // touching the absent pages faults them in
        Assert.Equal(sum, TtFixture.Checksum(seen));
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(ThreeParts, f.Accounting.Pages);
    }

    [Fact]
    public void Swap_outs_failing_part_way_on_several_threads_under_reclaim_lose_no_byte_and_leak_nothing()
    {
        // 3 owners and a reclaim thread on 2 cores; 6 buffers of 8-20 MiB over a 48 MiB limit, so populates evict.
        using var f = new TtFixture(memfd: true, limitBytes: 48 * Mib, dma32LimitBytes: 24 * Mib);
        using var stop = new CancellationTokenSource();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var reclaim = new Thread(() =>
        {
            var rng = new Random(99);
            while (!stop.IsCancellationRequested)
            {
                f.Accounting.Scan(rng.Next(1, 4096));
                if (f.Accounting.Pages > f.Accounting.PageLimit) errors.Enqueue($"{f.Accounting.Pages} pages charged over the limit");
                Thread.Sleep(1);
            }
        });
        reclaim.Start();
        var owners = Enumerable.Range(0, 3).Select(n => new Thread(() =>
        {
            try { Own(f, n, errors); }
            catch (Exception e) { errors.Enqueue(e.ToString()); }
        })).ToArray();
        foreach (var o in owners) o.Start();
        foreach (var o in owners) o.Join();
        stop.Cancel();
        reclaim.Join();

        Assert.Empty(errors);
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.Accounting.Dma32Pages);
        Assert.Equal(0, f.PoolInUse);
        Assert.Equal(0, f.Store.BytesInUse);
    }

    private static void Own(TtFixture f, int n, System.Collections.Concurrent.ConcurrentQueue<string> errors)
    {
        var rng = new Random(1000 + n);
        var buffers = new[] { f.New(5000), f.New(2500, CachingMode.WriteCombined, Zone.Dma32) };
        var sums = new ulong[buffers.Length];
        try
        {
            for (int step = 0; step < 24; step++)
            {
                int b = rng.Next(buffers.Length);
                var t = buffers[b];
                using var r = t.Reserve(); // no eviction while this owner looks at it
                try
                {
                    if (t.State == TtState.Unpopulated)
                    {
                        t.Populate();
                        sums[b] = TtFixture.Fill(t, (ulong)(n * 100 + step));
                        continue;
                    }
                    if (t.State == TtState.SwappedOut) t.Populate();
                    if (TtFixture.Checksum(t) != sums[b]) errors.Enqueue($"owner {n} buffer {b} step {step}: bytes changed");
                    if (rng.Next(3) == 0) FaultInjector.Arm(FaultPoint.SwapWrite, skip: rng.Next(3));
                    try
                    {
                        t.SwapOut(rng.Next(2) == 0 ? long.MaxValue : rng.Next(512, 4096));
                    }
                    catch (SwapStoreException)
                    {
                    }
                    FaultInjector.Disarm(FaultPoint.SwapWrite);
                }
                catch (TtOutOfMemoryException)
                {
                    // Every other buffer is reserved or refused: try again later.
                }
            }
        }
        finally
        {
            foreach (var t in buffers) t.Dispose();
        }
    }

    // ---- swap-in (PrefaultedRead) ---------------------------------------------------------------------------

    [Theory]
    [InlineData(1024, false)] // 4 MiB: exactly two chunks, the read ends at a chunk boundary
    [InlineData(1537, false)] // a chunk and a page over
    [InlineData(2560, true)]  // 10 MiB scattered, with MADV_POPULATE_WRITE refused to the reader
    public void A_prefaulted_read_of_scattered_pages_is_bit_exact(int pages, bool refuse)
    {
        using var file = new TempFile(pages * 4096L, seed: pages);
        var (mem, vectors) = Scattered(pages, seed: pages);
        try
        {
            if (refuse) FaultInjector.Arm(FaultPoint.Madvise, count: int.MaxValue);
            PrefaultedRead.Run(file.Fd, vectors, 0, dropCache: true, boundedTail: true);
            FaultInjector.DisarmAll();
            for (int i = 0; i < pages; i++)
                Assert.True(new ReadOnlySpan<byte>(vectors[i].Base, 4096).SequenceEqual(file.Bytes.AsSpan(i * 4096, 4096)), $"page {i}");
        }
        finally
        {
            Libc.Munmap((byte*)mem, (nuint)pages * 4096);
        }
    }

    [Fact]
    public void A_prefaulted_read_past_the_end_of_the_file_throws_and_no_helper_touches_the_pages_after()
    {
        using var file = new TempFile(5 * Mib, seed: 7); // 8 MiB asked: the third chunk finds the end of the file
        int pages = (int)(8 * Mib / 4096);
        var (mem, vectors) = Scattered(pages, seed: 8);
        try
        {
            Assert.Throws<NativeCallException>(() => PrefaultedRead.Run(file.Fd, vectors, 0, dropCache: true, boundedTail: true));
            // Drop every page; a helper still faulting in after Run returned would bring some back.
            Assert.Equal(0, madvise((byte*)mem, (nuint)pages * 4096, 4 /* MADV_DONTNEED */));
            Thread.Sleep(20);
            Assert.Equal(0, Resident((byte*)mem, pages));
        }
        finally
        {
            Libc.Munmap((byte*)mem, (nuint)pages * 4096);
        }
    }

    [Fact]
    public void A_file_store_whose_cached_reopen_was_refused_restores_with_o_direct_reads_bit_exact()
    {
        var store = new FileSwapStore(Path.GetTempPath());
        Assert.SkipUnless(store.Direct, "the temp folder refuses O_DIRECT");
        store.CachedReads = false; // as where /proc/self/fd cannot be reopened
        using var f = new TtFixture(store: store, restoreBatch: 64 * Mib);
        using var t = f.New((int)(9 * Mib / 4096) + 3);
        f.AssertSwapRoundTrip(t, 36);
    }

    [Fact]
    public void A_file_store_on_tmpfs_restores_bit_exact_through_the_chunked_read()
    {
        Assert.SkipUnless(Directory.Exists("/dev/shm"), "no /dev/shm");
        var store = new FileSwapStore("/dev/shm");
        using var f = new TtFixture(store: store, restoreBatch: 64 * Mib);
        using var t = f.New((int)(10 * Mib / 4096));
        f.AssertSwapRoundTrip(t, 37);
        Assert.False(store.ReleasesMemory);
    }

    // The kernel's own readahead (8 MiB here, vda read_ahead_kb 8192) read past the extent into the next one (another
    // buffer's swapped bytes) after the final POSIX_FADV_DONTNEED: 2048 pages stayed cached. The last 16 MiB of a
    // restore are now read with readahead off (POSIX_FADV_RANDOM), asking for their chunks ahead inside the extent.
    [Theory]
    [InlineData(12, 64)] // one batch, read wholly with the kernel's readahead off (shorter than TailBytes)
    [InlineData(40, 24)] // two batches: the first reads on into the second with readahead, the second's tail without
    public void A_restore_leaves_no_page_of_the_next_extent_cached_by_readahead(int bufferMib, int batchMib)
    {
        var store = new FileSwapStore(Path.GetTempPath());
        Assert.SkipUnless(store.Direct, "the temp folder refuses O_DIRECT");
        using var f = new TtFixture(store: store, restoreBatch: batchMib * Mib);
        using var a = f.New((int)(bufferMib * Mib / 4096));
        using var b = f.New((int)(12 * Mib / 4096));
        a.Populate();
        b.Populate();
        ulong sum = TtFixture.Fill(a, 40);
        TtFixture.Fill(b, 41);
        a.SwapOut();
        b.SwapOut(); // right after a's extent
        a.Populate();
        Assert.Equal(sum, TtFixture.Checksum(a));
        Thread.Sleep(100); // readahead the restore started may still be in flight
        Assert.Equal(0, CachedPages(store.ReadDescriptor, bufferMib * Mib, 12 * Mib)); // b's swapped bytes
        Assert.Equal(0, CachedPages(store.ReadDescriptor, 0, bufferMib * Mib)); // a's, dropped as read
    }

    // ---- helpers --------------------------------------------------------------------------------------------

    // Pages of a fresh anonymous mapping in runs of three adjacent pages, the runs in a seeded shuffled order.
    private static (nint Mem, IoVec[] Vectors) Scattered(int pages, int seed)
    {
        byte* mem = Libc.Mmap(null, (nuint)pages * 4096, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
        var runs = Enumerable.Range(0, (pages + 2) / 3).ToArray();
        new Random(seed).Shuffle(runs);
        var vectors = new List<IoVec>(pages);
        foreach (int r in runs)
            for (int k = r * 3; k < Math.Min(pages, r * 3 + 3); k++) vectors.Add(new IoVec { Base = mem + (nuint)k * 4096, Length = 4096 });
        return ((nint)mem, vectors.ToArray());
    }

    private static long CachedPages(int fd, long offset, long bytes)
    {
        byte* map = Libc.Mmap(null, (nuint)bytes, Libc.PROT_READ, Libc.MAP_SHARED, fd, offset);
        try { return Resident(map, (int)(bytes / 4096)); }
        finally { Libc.Munmap(map, (nuint)bytes); }
    }

    private static long Resident(byte* mem, int pages)
    {
        var vec = new byte[pages];
        fixed (byte* v = vec) Assert.Equal(0, mincore(mem, (nuint)pages * 4096, v));
        return vec.Count(b => (b & 1) != 0);
    }

    // Read the CPU mapping without touching it from this thread (an inaccessible page is EFAULT, not SIGSEGV).
    private static bool TryReadMapped(byte* p, byte[] into)
    {
        fixed (byte* d = into)
        {
            var local = new IoVec { Base = d, Length = (nuint)into.Length };
            var remote = new IoVec { Base = p, Length = (nuint)into.Length };
            return process_vm_readv(Environment.ProcessId, &local, 1, &remote, 1, 0) == into.Length;
        }
    }

    [DllImport("libc")] private static extern nint process_vm_readv(int pid, IoVec* local, ulong liovcnt, IoVec* remote, ulong riovcnt, ulong flags);
    [DllImport("libc")] private static extern int mincore(void* addr, nuint length, byte* vec);
    [DllImport("libc")] private static extern int madvise(void* addr, nuint length, int advice);

    private sealed class TempFile : IDisposable
    {
        internal readonly int Fd;
        internal readonly byte[] Bytes;

        internal TempFile(long bytes, int seed)
        {
            Fd = FileIo.Open(Path.GetTempPath(), FileIo.O_TMPFILE | FileIo.O_RDWR | FileIo.O_CLOEXEC);
            Bytes = TtFixture.Pattern(bytes, (ulong)seed);
            fixed (byte* b = Bytes)
            {
                var v = new[] { new IoVec { Base = b, Length = (nuint)bytes } };
                FileIo.PwritevExact(Fd, v, 0);
            }
        }

        public void Dispose() => Libc.Close(Fd);
    }

    /// <summary>A memfd store that calls back after each write (the count so far), to act in the middle of a swap-out.</summary>
    private sealed class HookedStore : SwapStore
    {
        private readonly int _fd = Libc.MemfdCreate("pagepool-test-swap", Libc.MFD_CLOEXEC);
        private int _writes;
        internal Action<int>? AfterWrite;

        public override string Description => "hooked test memfd";
        public override bool ReleasesMemory => false;
        private protected override long KeptFreeBytes => 0;
        internal override long AllocatedBytes => AllocatedBytesOf(_fd);

        private protected override void WriteAt(long offset, Span<IoVec> vectors, long bytes)
        {
            FileIo.PwritevExact(_fd, vectors, offset);
            AfterWrite?.Invoke(++_writes);
        }

        private protected override void ReadAt(long offset, Span<IoVec> vectors, long bytes, bool continues) => FileIo.PreadvExact(_fd, vectors, offset);
        private protected override void Discard(long offset, long bytes) { }
        private protected override void Close() => Libc.Close(_fd);
    }
}
