using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PagePool.Native;

namespace PagePool.Dma;

/// <summary>
/// Deferred IOTLB invalidation (iommu.strict=0): unmapped IOVAs wait in per-CPU queues and are freed only after
/// one IOTLB flush covers them all, when a queue holds <see cref="DmaPlatformOptions.FlushQueueEntries"/> entries
/// or its oldest is <see cref="DmaPlatformOptions.FlushTimeout"/> old (a timer, as Linux's fq_timer). Until then the
/// IOVA is not reused, and a device may still reach the unmapped page through a stale IOTLB entry.
/// </summary>
/// <remarks>
/// <para>Per-CPU queues are taken by atomic exchange, as the IOVA caches are: no lock on unmap.</para>
/// <para>Two CPUs busy unmapping through one domain write nothing the other touches, so the IOVAs each maps stay its
/// own. A flushed queue's ranges go back to the IOVA cache of the CPU whose queue it was, whoever flushes it (Linux
/// frees them into the flushing CPU's cache, which for the timer is any CPU). The timer takes a queue out of its slot
/// only when it looks expired, so a CPU that is busy unmapping does not find its queue gone. Each queue counts its
/// own flushes in the IOTLB's per-CPU flush counters. What is left crosses only when a CPU finds its queue or
/// cache held (by the timer flushing it after the CPU went quiet, or by a thread preempted while holding it): it
/// then uses another CPU's, as before, and the timer writes an expired queue from whichever CPU it runs on. Before, the timer took
/// every queue each tick and freed into its own CPU's cache, and one counter for the domain was written on every
/// flush: neighbouring IOVAs ended up mapped by different CPUs, whose leaf-table lines the hardware prefetchers
/// then pulled back and forth (on an AMD EPYC host, one domain shared by two CPUs scaled 0.86-0.93 of the pool hit's
/// scaling where two domains reached 1.0).</para>
/// </remarks>
internal sealed unsafe class FlushQueue : IDisposable
{
    private const int SlotStride = 16;

    // Fields 64 bytes from both ends (as the IOVA cache's per-CPU objects): Count is written on every unmap. The
    // entries, written in order from the first to the last, are pages of their own (PagePrivate): a prefetcher
    // running along one CPU's entries stops at the page's end, where it would otherwise go on into the next CPU's.
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private sealed class Queue
    {
        [FieldOffset(64)] private readonly PagePrivate _entries;
        [FieldOffset(72)] internal readonly ulong* Pfn;   // [capacity]
        [FieldOffset(80)] internal readonly ulong* Pages; // [capacity]
        [FieldOffset(88)] internal int Count;
        [FieldOffset(96)] internal long FirstTimestamp;
        [FieldOffset(184)] private readonly long _end; // the JIT ignores Size on a class: a last field makes the room

        internal Queue(int capacity)
        {
            _entries = new PagePrivate(2 * capacity);
            Pfn = _entries.Start;
            Pages = _entries.Start + capacity;
        }
    }

    private readonly IommuDomain _domain;
    private readonly Queue?[] _slots;
    private readonly int _slotMask, _capacity;
    private readonly long _timeoutTicks;
    private readonly Timer _timer;
    private long _timerTakes;

    internal FlushQueue(IommuDomain domain, int cpus, int capacity, TimeSpan timeout)
    {
        _domain = domain;
        _capacity = capacity;
        int slots = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, cpus));
        _slotMask = slots - 1;
        _slots = new Queue?[(slots + 1) * SlotStride];
        for (int s = 0; s < slots; s++) _slots[(s + 1) * SlotStride] = new Queue(capacity);
        _timeoutTicks = (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        _timer = new Timer(_ => FlushExpired(), null, timeout, timeout);
    }

    /// <summary>Flushes so far, of every queue: each is one full IOTLB flush, counted there per CPU.</summary>
    internal long Flushes => _domain.Iotlb.FullFlushes;

    /// <summary>How often the timer has taken a queue out of its slot (tests: it takes only expired ones).</summary>
    internal long TimerTakes => Volatile.Read(ref _timerTakes);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref Queue? Slot(int s) => ref _slots[((s & _slotMask) + 1) * SlotStride];

    /// <summary>Queue an unmapped range; flush this queue when it is full.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Add(ulong pfn, ulong pages)
    {
        int cpu = Shim.CurrentCpu();
        Queue? q;
        var spin = new SpinWait();
        while ((q = Interlocked.Exchange(ref Slot(cpu), null)) is null) { cpu++; spin.SpinOnce(-1); }
        int n = q.Count;
        if (n == 0) q.FirstTimestamp = Stopwatch.GetTimestamp();
        q.Pfn[n] = pfn;
        q.Pages[n] = pages;
        q.Count = n + 1;
        if (n + 1 >= _capacity) Flush(q, cpu);
        Volatile.Write(ref Slot(cpu), q);
    }

    // One IOTLB flush, then the IOVAs become reusable: never the other way round. They go back to the cache of the
    // CPU whose queue this is (slot), not the flushing thread's.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Flush(Queue q, int slot)
    {
        _domain.Iotlb.InvalidateAll(slot);
        _domain.Iova.FreeFastBatch(new ReadOnlySpan<ulong>(q.Pfn, q.Count), new ReadOnlySpan<ulong>(q.Pages, q.Count), slot);
        q.Count = 0;
    }

    private bool Expired(Queue q, long now) => q.Count > 0 && now - q.FirstTimestamp >= _timeoutTicks;

    private void FlushExpired() => FlushExpired(Stopwatch.GetTimestamp());

    /// <summary>The timer's tick: flush each queue whose oldest entry is older than the timeout.</summary>
    internal void FlushExpired(long now)
    {
        for (int s = 0; s <= _slotMask; s++)
        {
            // Look before taking: a queue its CPU is filling is not expired, and taking it would send that CPU's
            // next unmap to another CPU's queue. A stale look only delays a flush to the next tick.
            if (Volatile.Read(ref Slot(s)) is not { } seen || !Expired(seen, now)) continue;
            var q = Interlocked.Exchange(ref Slot(s), null);
            if (q is null) continue; // in use right now: its owner will see it, or the next tick
            Interlocked.Increment(ref _timerTakes);
            if (Expired(q, now)) Flush(q, s);
            Volatile.Write(ref Slot(s), q);
        }
    }

    /// <summary>Flush every queue now (domain teardown, and callers that need unmapped IOVAs back).</summary>
    internal void FlushAll()
    {
        for (int s = 0; s <= _slotMask; s++)
        {
            Queue? q;
            var spin = new SpinWait();
            while ((q = Interlocked.Exchange(ref Slot(s), null)) is null) spin.SpinOnce(-1);
            if (q.Count > 0) Flush(q, s);
            Volatile.Write(ref Slot(s), q);
        }
    }

    public void Dispose()
    {
        using var done = new ManualResetEvent(false);
        _timer.Dispose(done);
        done.WaitOne();
    }
}
