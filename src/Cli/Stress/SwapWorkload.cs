using PagePool.Shrinker;
using System.Diagnostics;
using PagePool.Dma;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Tt;

namespace PagePool.Cli.Stress;

/// <summary>
/// The state of a swap run: the store, the accounting with its buffer limit, the devices, and each worker's buffers.
/// Every buffer's bytes are a function of its id and position, checked after every restore and before it is destroyed.
/// </summary>
internal sealed class SwapWorkload
{
    private readonly StressSettings _settings;
    private readonly SwapStore _store;
    private readonly BufferAccounting _accounting;
    // Devices of the DMA layer (dma-direct): a 64-bit one takes the pages where they are, a 32-bit one gets copies
    // of pages above 4 GiB. The checker counts their mappings, so a binding left behind shows at the end.
    private readonly DmaPlatform _platform;
    private readonly DmaDevice _device64, _device32;
    private readonly List<SwapBuffer>[] _buffers;
    private readonly long _shareBytes;
    private long _verifyFailures, _interruptedRestores, _failedWrites, _outOfMemory, _copiedBinds, _binds;
    private long _liveBytes, _peakLiveBytes;
    private long _swapTicks, _nextId = 1L << 56; // ids apart from the other scenarios' buffers
    private readonly List<string> _failures = new();

    /// <summary>The random choices of one step, drawn up front.</summary>
    private readonly record struct Draw(int R, int Index, int Pages, CachingMode Caching, Zone Zone, int Bits)
    {
        internal int Pick(int count) => Index % count;
        /// <summary>A number in [0, n) from bits k.. of <see cref="Bits"/> (independent small choices).</summary>
        internal int Choice(int k, int n) => (Bits >> (3 * k)) % n;
    }

    private sealed class SwapBuffer(PageArray array, ulong id)
    {
        internal readonly PageArray Array = array;
        internal readonly ulong Id = id;
    }

    private readonly ShrinkerRegistry? _shrinkers;

    /// <summary>A workload whose buffers hold <paramref name="bytes"/> live, all threads together.</summary>
    internal SwapWorkload(PoolAllocator pool, StressSettings s, ShrinkerRegistry? shrinkers, long bytes)
    {
        _settings = s;
        _store = s.SwapStore == "memfd" ? SwapStore.CreateMemfd() : SwapStore.CreateFile(s.SwapDir);
        // Default limit: half of what the buffers hold, so they must swap for the workers to reach their share; in a
        // memory cgroup at most half its limit, as TTM takes half of RAM: the cgroup is this process's RAM. What the
        // rest of the process needs on top (pool buffers, pooled pages) is the reclaim thread's to find under --reclaim.
        long? cgroup = MemoryStatus.CgroupLimitBytes;
        bool cgroupBound = s.BufferLimitBytes is null && cgroup / 2 < bytes / 2;
        long limit = s.BufferLimitBytes ?? (cgroupBound ? Math.Max(1L << 20, cgroup!.Value / 2) : bytes / 2);
        string why = cgroupBound ? $" (half the memory cgroup's {Size.Format(cgroup!.Value)} limit)" : "";
        _accounting = new BufferAccounting(pool, _store, new AccountingOptions
        {
            PageLimitBytes = limit,
            Dma32LimitBytes = Math.Min(limit, 2L << 30),
            RestoreBatchBytes = 256L << 10, // small batches: an injected interruption lands part way through
        });
        _buffers = new List<SwapBuffer>[s.Threads];
        for (int i = 0; i < _buffers.Length; i++) _buffers[i] = new List<SwapBuffer>();
        _shareBytes = bytes / s.Threads;
        _platform = new DmaPlatform(pool.Memory, new DmaPlatformOptions { Checker = true });
        _device64 = _platform.CreateDevice(new DmaDeviceOptions { Name = "device64", OpsKind = DmaOpsKind.Direct, MaskBits = 64 });
        _device32 = _platform.CreateDevice(new DmaDeviceOptions { Name = "device32", OpsKind = DmaOpsKind.Direct, MaskBits = 32 });
        // Under --reclaim the buffers' LRU is a shrinker too: pressure swaps out idle buffers, as TTM's swapout does.
        _shrinkers = shrinkers;
        _shrinkers?.Register(_accounting);
        Console.Error.WriteLine($"swap: store {_store.Description}, buffer limit {Size.Format(limit)}{why}");
    }

    internal void Step(StressWorker w)
    {
        var mine = _buffers[w.Index];
        long held = mine.Sum(b => b.Array.Bytes);
        // Every step draws the same numbers whatever the buffers' states (other threads' evictions change those),
        // so a seed gives one operation sequence for every scenario mixed with this one.
        var d = new Draw(w.Next(100), w.Next(1 << 30), w.PickPages(), w.PickCaching(), w.Next(4) == 0 ? Zone.Dma32 : Zone.Normal, w.Next(1 << 30));
        int r = d.R;
        w.Fold((ulong)r);
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            // Grow to the share first: the whole working set is live, and the buffer limit makes it swap.
            if ((held < _shareBytes && r < 60) || mine.Count == 0) Create(d, mine);
            else if (r < 70) Use(d, mine[d.Pick(mine.Count)], verifyAll: _settings.Verify);
            else if (r < 78) SwapOut(d, mine[d.Pick(mine.Count)]);
            else if (r < 88) Move(d, mine[d.Pick(mine.Count)]);
            else if (r < 94) _accounting.Scan(d.Choice(0, 512) + 1); // what the reclaim thread does under pressure
            else Destroy(d, mine, d.Pick(mine.Count));
        }
        catch (TtOutOfMemoryException)
        {
            Interlocked.Increment(ref _outOfMemory); // every other buffer busy in another thread: survived, counted
        }
        catch (SwapStoreException) when (_settings.Inject is not null)
        {
            // Faults are armed on the shared store: another thread's restore or write may take one. It survives it
            // the same way: the write left the buffer whole, the restore resumes at the next use.
            Interlocked.Increment(ref _settings.Inject == "failing-write" ? ref _failedWrites : ref _interruptedRestores);
        }
        Interlocked.Add(ref _swapTicks, Stopwatch.GetTimestamp() - t0);
        w.Operations++;
    }

    private void Create(Draw d, List<SwapBuffer> mine)
    {
        var buffer = new SwapBuffer(new PageArray(_accounting, d.Pages, d.Caching, d.Zone), (ulong)Interlocked.Increment(ref _nextId));
        using (buffer.Array.Reserve())
        {
            try
            {
                buffer.Array.Populate();
            }
            catch
            {
                buffer.Array.Dispose();
                throw;
            }
            Fill(buffer);
        }
        mine.Add(buffer);
        long live = Interlocked.Add(ref _liveBytes, buffer.Array.Bytes), peak;
        while (live > (peak = Volatile.Read(ref _peakLiveBytes)) && Interlocked.CompareExchange(ref _peakLiveBytes, live, peak) != peak) { }
    }

    // Bring the buffer back if it was swapped, check it, and write it again (it is in use).
    private void Use(Draw d, SwapBuffer b, bool verifyAll)
    {
        using (b.Array.Reserve())
        {
            if (b.Array.State == TtState.SwappedOut) Restore(d, b);
            if (b.Array.State == TtState.SwappedOut) return; // interrupted on purpose: the next use resumes
            Check(b, verifyAll ? b.Array.PageCount : 1, "after use");
            b.Array.Touch();
        }
    }

    private void Restore(Draw d, SwapBuffer b)
    {
        if (_settings.Inject == "interrupted-restore" && d.Choice(1, 4) == 0)
        {
            _store.Faults.FailReads(1, after: d.Choice(2, 3));
            try
            {
                b.Array.Populate();
                _store.Faults.FailReads(0); // the buffer needed fewer reads than the fault waited for
            }
            catch (SwapStoreException)
            {
                Interlocked.Increment(ref _interruptedRestores);
                return;
            }
        }
        else b.Array.Populate();
        Check(b, b.Array.PageCount, "after swap-in");
    }

    private void SwapOut(Draw d, SwapBuffer b)
    {
        using (b.Array.Reserve())
        {
            if (b.Array.State is not (TtState.Populated or TtState.SwappedOut) || b.Array.ResidentPages == 0) return;
            bool inject = _settings.Inject == "failing-write" && d.Choice(3, 4) == 0;
            if (inject) _store.Faults.FailWrites(1);
            try
            {
                b.Array.SwapOut(d.Choice(4, 4) == 0 ? b.Array.PageCount / 2 : long.MaxValue); // sometimes a partial backup
            }
            catch (SwapStoreException) when (inject)
            {
                Interlocked.Increment(ref _failedWrites);
                if (b.Array.State == TtState.Populated) Check(b, b.Array.PageCount, "after a failed swap write");
            }
        }
    }

    // Bind to one of the devices (a 32-bit one copies high pages down), check, unbind.
    private void Move(Draw d, SwapBuffer b)
    {
        using (b.Array.Reserve())
        {
            if (b.Array.State == TtState.SwappedOut) Restore(d, b);
            if (b.Array.State != TtState.Populated) return;
            var device = d.Choice(5, 2) == 0 ? _device32 : _device64;
            Interlocked.Increment(ref _binds);
            if (b.Array.Bind(device)) Interlocked.Increment(ref _copiedBinds);
            Check(b, 1, $"bound to {device.Name}");
            CheckDeviceView(b, device);
            b.Array.Unbind();
        }
    }

    private void Destroy(Draw d, List<SwapBuffer> mine, int index)
    {
        var b = mine[index];
        mine[index] = mine[^1];
        mine.RemoveAt(mine.Count - 1);
        Interlocked.Add(ref _liveBytes, -b.Array.Bytes);
        try
        {
            using (b.Array.Reserve())
            {
                if (b.Array.State == TtState.SwappedOut) Restore(d, b);
                if (b.Array.State == TtState.Populated) Check(b, b.Array.PageCount, "at destroy");
            }
        }
        finally
        {
            b.Array.Dispose(); // off the list already: whatever the restore did, the buffer goes
        }
    }

    // ---- contents ------------------------------------------------------------------------------------

    private static ulong Word(ulong id, long index)
    {
        ulong z = id * 0x9E3779B97F4A7C15UL + (ulong)index;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private void Fill(SwapBuffer b)
    {
        var page = new ulong[PhysicalMemory.PageSize / 8];
        long word = 0;
        for (int p = 0; p < b.Array.PageCount; p++)
        {
            for (int i = 0; i < page.Length; i++) page[i] = Word(b.Id, word++);
            b.Array.Write((long)p << PhysicalMemory.PageShift, System.Runtime.InteropServices.MemoryMarshal.AsBytes(page.AsSpan()));
        }
    }

    // What the bound device reads at the first page's DMA address must be the buffer's first page.
    private void CheckDeviceView(SwapBuffer b, DmaDevice device)
    {
        var page = new ulong[PhysicalMemory.PageSize / 8];
        device.Engine.Read(b.Array.DmaAddress(0), System.Runtime.InteropServices.MemoryMarshal.AsBytes(page.AsSpan()));
        for (int i = 0; i < page.Length; i++)
            if (page[i] != Word(b.Id, i))
            {
                Interlocked.Increment(ref _verifyFailures);
                lock (_failures) if (_failures.Count < 8) _failures.Add($"buffer {b.Id} reads wrong through {device.Name}'s DMA address: word {i}");
                return;
            }
    }

    // Check the first `pages` pages (all with --verify, else the first) word by word.
    private void Check(SwapBuffer b, int pages, string when)
    {
        var page = new ulong[PhysicalMemory.PageSize / 8];
        for (int p = 0; p < pages; p++)
        {
            b.Array.Read((long)p << PhysicalMemory.PageShift, System.Runtime.InteropServices.MemoryMarshal.AsBytes(page.AsSpan()));
            long first = (long)p * page.Length;
            for (int i = 0; i < page.Length; i++)
                if (page[i] != Word(b.Id, first + i))
                {
                    Interlocked.Increment(ref _verifyFailures);
                    lock (_failures) if (_failures.Count < 8) _failures.Add($"buffer {b.Id} ({b.Array.PageCount} pages) corrupt {when}: page {p} word {i}");
                    return;
                }
        }
    }

    // ---- end of run ------------------------------------------------------------------------------------

    /// <summary>Restore, verify and destroy every buffer; return what is broken (lost bytes, leaks).</summary>
    internal IEnumerable<string> Finish()
    {
        var broken = new List<string>();
        _shrinkers?.Unregister(_accounting);
        _store.Faults.FailReads(0);
        _store.Faults.FailWrites(0);
        foreach (var list in _buffers)
        {
            foreach (var b in list)
            {
                if (b.Array.State == TtState.SwappedOut) b.Array.Populate();
                Check(b, b.Array.PageCount, "at the end");
                b.Array.Dispose();
            }
            list.Clear();
        }
        if (_accounting.Pages != 0) broken.Add($"buffer accounting still charges {_accounting.Pages} pages after every buffer was destroyed");
        if (_store.BytesInUse != 0) broken.Add($"the swap store still holds {_store.BytesInUse} bytes after every buffer was destroyed");
        if (_platform.Checker!.ActiveMappings(_device32) + _platform.Checker.ActiveMappings(_device64) != 0) broken.Add("a device still has pages mapped");
        if (Volatile.Read(ref _verifyFailures) != 0) broken.Add($"{_verifyFailures} buffers read back wrong: {string.Join("; ", _failures)}");
        _store.Dispose();
        _platform.Dispose();
        return broken;
    }

    internal IEnumerable<(string Name, string Text, double Value)> Report()
    {
        long outBytes = _accounting.BytesSwappedOut, inBytes = _accounting.BytesSwappedIn;
        double outS = Math.Max(1e-9, _store.WriteTime.TotalSeconds), inS = Math.Max(1e-9, _store.ReadTime.TotalSeconds);
        yield return ("swap.out_bytes", $"swapped out           {Size.Format(outBytes)} at {outBytes / outS / 1e9:0.00} GB/s of store writes ({_store.Description})", outBytes);
        yield return ("swap.in_bytes", $"swapped in            {Size.Format(inBytes)} at {inBytes / inS / 1e9:0.00} GB/s of store reads", inBytes);
        yield return ("swap.out_gbps", "", Math.Round(outBytes / outS / 1e9, 3));
        yield return ("swap.in_gbps", "", Math.Round(inBytes / inS / 1e9, 3));
        yield return ("swap.step_seconds", $"swap steps            {Stopwatch.GetElapsedTime(0, _swapTicks).TotalSeconds:0.00} s, all threads (I/O, copies, verification)", Math.Round(Stopwatch.GetElapsedTime(0, _swapTicks).TotalSeconds, 3));
        yield return ("swap.live_peak_bytes", $"live buffers at peak  {Size.Format(_peakLiveBytes)} (resident or swapped)", _peakLiveBytes);
        yield return ("swap.evictions", $"evicted by limit/scan {_accounting.Evictions:N0} buffers", _accounting.Evictions);
        yield return ("swap.binds", $"binds                 {_binds:N0} ({_copiedBinds:N0} copied into DMA32 for the 32-bit device)", _binds);
        yield return ("swap.out_of_memory", $"out of memory         {_outOfMemory:N0} populates (every other buffer busy)", _outOfMemory);
        if (_settings.Inject is not null)
            yield return ("swap.injected", $"injected faults       {_interruptedRestores:N0} interrupted restores, {_failedWrites:N0} failed writes", _interruptedRestores + _failedWrites);
    }
}
