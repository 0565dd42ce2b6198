using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

/// <summary>
/// Teardown while something is held or running. Memory handed out before a device or its pool went away is never
/// lost. An IOMMU device disposed while other threads are inside calls on it: a call that has passed the disposed
/// check still finds the domain's page table, IOTLB, flush queue and IOVA caches where it left them, so it ends in
/// success, in <see cref="ObjectDisposedException"/> or in a typed DMA error, never in a read or write of memory the
/// domain gave back; the page table's memory goes back once nothing can reach the device.
/// </summary>
public sealed class DmaTeardownTests
{
    [Fact]
    public void Coherent_memory_freed_after_its_device_was_disposed_goes_back_to_the_system()
    {
        using var m = new DmaTestMachine();
        long before = m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal);
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = dev.AllocateCoherent(0);
        dev.Dispose(); // the checker reports the allocation still out, as dma-debug does
        Assert.Contains(m.Checker.Reports, r => r.Class == DmaCheckClass.PendingAtRelease);
        dev.FreeCoherent(block);
        Assert.Equal(before, m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal));
    }

    [Fact]
    public void A_dma_pool_page_freed_after_the_pool_was_disposed_goes_back_to_the_system()
    {
        using var m = new DmaTestMachine();
        long before = m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal);
        var dev = m.Device("nic", DmaOpsKind.Direct, maskBits: 32);
        var pool = new DmaPagePool(dev);
        var page = pool.Allocate(CachingMode.WriteBack, 0);
        pool.Dispose();
        pool.Free(page);
        Assert.Throws<ObjectDisposedException>(() => pool.Free(page)); // twice: the pool no longer knows it
        dev.Dispose();
        Assert.Equal(before, m.Memory.UsedBytes(Zone.Dma32) + m.Memory.UsedBytes(Zone.Normal));
    }

    // One device's life: the flags bracket its Dispose, so a worker can tell a call that ran across it.
    private sealed class Round(DmaDevice device)
    {
        internal readonly DmaDevice Device = device;
        internal int DisposeBegun, DisposeEnded;
    }

    // What the workers saw of the race, summed over every round.
    private sealed class Tally
    {
        internal long Calls, Refused;
        // Calls that began before their device's Dispose began and returned after it had returned, and of those
        // the ones that got past the disposed check (they returned, or failed with a DMA error): they ran in the
        // domain while it was torn down.
        internal long AcrossDispose, AcrossDisposeInside;
    }

    [Theory]
    [InlineData(false, 11)]
    [InlineData(true, 12)]
    public void Maps_device_writes_reads_and_unmaps_racing_the_IOMMU_devices_Dispose_end_in_success_or_a_typed_error(bool deferred, int seed)
    {
        // A short timeout and queue: timer ticks and full-queue flushes run during the race as well.
        using var m = new DmaTestMachine(deferred: deferred, checker: false, flushTimeout: TimeSpan.FromMilliseconds(1), flushEntries: 16);
        int threads = Environment.ProcessorCount * 3;
        const int MinInside = 20;
        long budget = Stopwatch.Frequency * 6 / 10, limit = 2 * budget; // 0.6 s, or up to 1.2 s until MinInside
        var errors = new ConcurrentQueue<string>();
        var tally = new Tally();
        Round? current = null;
        int stop = 0;
        using var go = new Barrier(threads + 1);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(seed * 100 + t);
            var block = m.Memory.AllocateBlock(Zone.Normal, 2);
            var pattern = DmaTestMachine.Pattern(8 * 4096, seed * 100 + t);
            var got = new byte[3 * 4096];
            long calls = 0;
            go.SignalAndWait();
            while (Volatile.Read(ref stop) == 0)
            {
                if (Volatile.Read(ref current) is not { } round) continue;
                var dev = round.Device;
                int len = rng.Next(1, 3 * 4096), off = rng.Next(0, 4 * 4096 - len);
                var data = pattern.AsSpan(rng.Next(0, pattern.Length - len), len);
                var back = got.AsSpan(0, len);
                bool live = false; // the device's Dispose had not begun when the current call did
                try
                {
                    live = Live(round);
                    ulong dma = dev.MapPage(block, off, len, DmaDirection.Bidirectional);
                    Returned(round, live, tally, ref calls);
                    live = Live(round);
                    dev.Engine.Write(dma, data);
                    Returned(round, live, tally, ref calls);
                    m.Memory.Read(block, off, back); // the device wrote this thread's block, through its mapping
                    if (!back.SequenceEqual(data)) errors.Enqueue($"{dev.Name}: a device write of {len} bytes at {off} did not land in the mapped block");
                    back.Clear();
                    live = Live(round);
                    dev.Engine.Read(dma, back);
                    Returned(round, live, tally, ref calls);
                    if (!back.SequenceEqual(data)) errors.Enqueue($"{dev.Name}: a device read of {len} bytes at {off} did not come from the mapped block");
                    if (rng.Next(4) == 0)
                    {
                        live = Live(round);
                        dev.SyncForCpu(dma, len, DmaDirection.Bidirectional);
                        Returned(round, live, tally, ref calls);
                    }
                    live = Live(round);
                    dev.UnmapPage(dma, len, DmaDirection.Bidirectional);
                    Returned(round, live, tally, ref calls);
                }
                // Only a device whose Dispose has begun may refuse, and only with these.
                catch (Exception e) when (dev.IsDisposed && e is ObjectDisposedException or DmaMappingException or DmaFaultException)
                {
                    calls++;
                    Interlocked.Increment(ref tally.Refused);
                    if (live && Volatile.Read(ref round.DisposeEnded) != 0)
                    {
                        Interlocked.Increment(ref tally.AcrossDispose);
                        if (e is not ObjectDisposedException) Interlocked.Increment(ref tally.AcrossDisposeInside);
                    }
                }
                catch (Exception e)
                {
                    errors.Enqueue($"{dev.Name}: {e.GetType().Name}: {e.Message}");
                }
            }
            Interlocked.Add(ref tally.Calls, calls);
            m.Memory.FreeBlock(block);
        })).ToList();
        workers.ForEach(w => w.Start());
        go.SignalAndWait(TestContext.Current.CancellationToken);

        var rng = new Random(seed);
        long start = Stopwatch.GetTimestamp(), now;
        int rounds = 0;
        do
        {
            var round = new Round(m.Device($"gpu{rounds}", DmaOpsKind.Iommu, coherent: rounds % 2 == 0));
            Volatile.Write(ref current, round);
            // Let the workers into the device for 50 to 500 us, spinning: a yield on a full machine can wait a whole slice.
            long until = Stopwatch.GetTimestamp() + Stopwatch.Frequency * rng.Next(50, 500) / 1_000_000;
            while (Stopwatch.GetTimestamp() < until) Thread.SpinWait(20);
            Volatile.Write(ref round.DisposeBegun, 1);
            round.Device.Dispose();
            Volatile.Write(ref round.DisposeEnded, 1);
            rounds++;
            now = Stopwatch.GetTimestamp() - start;
        }
        while (now < limit && (now < budget || Interlocked.Read(ref tally.AcrossDisposeInside) < MinInside));
        Volatile.Write(ref stop, 1);
        workers.ForEach(w => w.Join());

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        // The race was run, not only calls before and after it.
        Assert.True(tally.AcrossDisposeInside >= MinInside,
            $"{rounds} rounds, {tally.Calls} calls, {tally.Refused} refused, {tally.AcrossDispose} across a Dispose ({tally.AcrossDisposeInside} of them inside the domain)");
    }

    private static bool Live(Round round) => Volatile.Read(ref round.DisposeBegun) == 0;

    // A call returned: count it, and whether it ran across its device's Dispose.
    private static void Returned(Round round, bool live, Tally tally, ref long calls)
    {
        calls++;
        if (!live || Volatile.Read(ref round.DisposeEnded) == 0) return;
        Interlocked.Increment(ref tally.AcrossDispose);
        Interlocked.Increment(ref tally.AcrossDisposeInside);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Ops_already_past_the_disposed_check_when_Dispose_runs_still_find_the_page_table(bool deferred)
    {
        using var m = new DmaTestMachine(deferred: deferred, checker: false);
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var ops = (IommuOps)dev.Ops; // what a call holds once it is past DmaDevice.ThrowIfDisposed
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
        dev.Dispose();

        Assert.True(ops.Translate(dma, true, out byte* host, out int room, out _, out string? fault), fault);
        Assert.Equal(4096, room);
        Assert.True(host == m.Memory.HeldView(block, out _, out _));
        ops.Sync(dma, 4096, DmaDirection.Bidirectional, forCpu: true);
        ops.Unmap(dma, 4096, DmaDirection.Bidirectional);
        Assert.Throws<DmaMappingException>(() => ops.Unmap(dma, 4096, DmaDirection.Bidirectional));
        Assert.Throws<ObjectDisposedException>(() => dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional)); // new calls are refused
        m.Memory.FreeBlock(block);
    }

    [Fact]
    public void A_disposed_IOMMU_devices_page_table_is_freed_once_nothing_can_reach_the_device()
    {
        using var m = new DmaTestMachine(deferred: true, checker: false);
        var table = MapAndDispose(m);
        for (int i = 0; i < 3 && table.IsAlive; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.False(table.IsAlive); // finalized (its finalizer frees the tables) and collected
    }

    // In a method of its own, so no local of the test keeps the device alive.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference MapAndDispose(DmaTestMachine m)
    {
        var dev = m.Device("gpu", DmaOpsKind.Iommu);
        var block = m.Memory.AllocateBlock(Zone.Normal, 0);
        dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional); // left mapped: Dispose takes the domain whole
        var table = new WeakReference(((IommuOps)dev.Ops).Domain.Table, trackResurrection: true);
        dev.Dispose();
        m.Memory.FreeBlock(block);
        return table;
    }
}
