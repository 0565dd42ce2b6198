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
/// <remarks>Per-CPU queues are taken by atomic exchange, as the IOVA caches are: no lock on unmap.</remarks>
internal sealed class FlushQueue : IDisposable
{
    private const int SlotStride = 16;

    // Fields 64 bytes from both ends (as the IOVA cache's per-CPU objects): Count is written on every unmap.
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private sealed class Queue(int capacity)
    {
        [FieldOffset(64)] internal readonly ulong[] Pfn = new ulong[capacity];
        [FieldOffset(72)] internal readonly ulong[] Pages = new ulong[capacity];
        [FieldOffset(80)] internal int Count;
        [FieldOffset(88)] internal long FirstTimestamp;
        [FieldOffset(184)] private readonly long _end; // the JIT ignores Size on a class: a last field makes the room
    }

    private readonly IommuDomain _domain;
    private readonly Queue?[] _slots;
    private readonly int _slotMask, _capacity;
    private readonly long _timeoutTicks;
    private readonly Timer _timer;
    private long _flushes;

    internal FlushQueue(IommuDomain domain, int cpus, int capacity, TimeSpan timeout)
    {
        _domain = domain;
        _capacity = capacity;
        int slots = 1;
        while (slots < cpus) slots <<= 1;
        _slotMask = slots - 1;
        _slots = new Queue?[(slots + 1) * SlotStride];
        for (int s = 0; s < slots; s++) _slots[(s + 1) * SlotStride] = new Queue(capacity);
        _timeoutTicks = (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        _timer = new Timer(_ => FlushExpired(), null, timeout, timeout);
    }

    internal long Flushes => Volatile.Read(ref _flushes);

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
        if (n + 1 >= _capacity) Flush(q);
        Volatile.Write(ref Slot(cpu), q);
    }

    // One IOTLB flush, then the IOVAs become reusable: never the other way round.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Flush(Queue q)
    {
        _domain.Iotlb.InvalidateAll();
        _domain.Iova.FreeFastBatch(q.Pfn.AsSpan(0, q.Count), q.Pages.AsSpan(0, q.Count));
        q.Count = 0;
        Interlocked.Increment(ref _flushes);
    }

    private void FlushExpired()
    {
        long now = Stopwatch.GetTimestamp();
        for (int s = 0; s <= _slotMask; s++)
        {
            var q = Interlocked.Exchange(ref Slot(s), null);
            if (q is null) continue; // in use right now: its owner will see it, or the next tick
            if (q.Count > 0 && now - q.FirstTimestamp >= _timeoutTicks) Flush(q);
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
            if (q.Count > 0) Flush(q);
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
