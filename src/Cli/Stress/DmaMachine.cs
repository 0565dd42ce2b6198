using PagePool.Dma;
using PagePool.Memory;

namespace PagePool.Cli.Stress;

/// <summary>
/// The simulated machine a DMA stress run drives: a memory space, a platform with the checker on, devices of one ops
/// kind with a coherent DMA pool each, and one lane of work per worker thread. Built at the start of a run, torn
/// down at its end, when what the checker saw becomes the run's verdict.
/// </summary>
internal sealed class DmaMachine
{
    private readonly PhysicalMemory _memory;
    private readonly DmaPlatform _platform;
    private readonly DmaDevice[] _devices;
    private readonly DmaPagePool[] _pools;
    private readonly DmaInjection _inject;
    internal readonly DmaLane[] Lanes;
    private long _faults, _stale, _maintenance, _swiotlbLeft, _reports;
    private bool _finished;

    private const long Dma32Base = 16L << 20, NormalBase = 4L << 30;

    /// <summary>
    /// IOVA pages each thread may need on one device at once: its largest mapping (a scatterlist of up to 12 pages,
    /// size-aligned to 16) twice over, for the holes size alignment leaves.
    /// </summary>
    internal const int IovaPagesPerThread = 32;

    /// <summary>
    /// The DMA32 zone a run builds (what the lanes, DMA pools and swiotlb draw on): the working set (at least
    /// 128 MiB, at most 2 GiB), plus each thread's lane buffers and the DMA-pool page it may leave in every device's
    /// pool, plus the 64 MiB swiotlb pool. At most 1024 threads and 64 devices: 2.5 GiB, within the 4 GiB DMA32 space.
    /// </summary>
    internal static long Dma32Bytes(long workingSet, int threads, int devices)
        => Math.Min(Math.Min(2L << 30, Math.Max(128L << 20, workingSet)) + (long)threads * (DmaLane.HeldBytes + (long)devices * PhysicalMemory.PageSize) + (64L << 20),
                    (4L << 30) - Dma32Base);

    /// <summary>The Normal zone a run builds for a working set.</summary>
    internal static long NormalBytes(long workingSet) => Math.Max(256L << 20, workingSet);

    /// <summary>
    /// Why devices of <paramref name="kind"/> with a mask of <paramref name="bits"/> cannot run on the machine a run
    /// of this working set and thread count builds (and the masks that can), or null when they can. A mask that
    /// cannot reach what the run hands its devices would only end the run in a mapping error.
    /// </summary>
    internal static string? MaskProblem(DmaOpsKind kind, int bits, long workingSet, int threads, int devices)
    {
        if (MaskWorks(kind, bits, workingSet, threads, devices)) return null;
        var ranges = new List<string>();
        for (int b = 12; b <= 64; b++)
        {
            if (!MaskWorks(kind, b, workingSet, threads, devices)) continue;
            int end = b;
            while (end < 64 && MaskWorks(kind, end + 1, workingSet, threads, devices)) end++;
            ranges.Add(end == b ? $"{b}" : $"from {b} to {end}");
            b = end;
        }
        string why = kind switch
        {
            DmaOpsKind.Xen => "under Xen, bounce slots and DMA32 pages have machine addresses anywhere below 4 GiB",
            DmaOpsKind.Iommu => $"each device needs IOVA space for every thread's largest mapping, {IovaPagesPerThread} pages a thread: " +
                                $"{(long)IovaPagesPerThread * (threads + 1)} pages for {threads} threads, and a {bits}-bit mask leaves {Math.Max(0, (long)(Mask(bits) >> 12))}",
            DmaOpsKind.Swiotlb => $"the bounce pool and DMA-pool pages lie anywhere in this run's DMA32 zone, up to {Size.Format(Dma32Base + Dma32Bytes(workingSet, threads, devices))}; " +
                                  $"above 32 bits, DMA-pool pages come from the Normal zone, up to {Size.Format(NormalBase + NormalBytes(workingSet))}",
            _ => $"direct devices use physical addresses, and this run's buffers and DMA-pool pages lie anywhere in its DMA32 zone, up to " +
                 $"{Size.Format(Dma32Base + Dma32Bytes(workingSet, threads, devices))} (in the Normal zone above 32 bits, up to {Size.Format(NormalBase + NormalBytes(workingSet))})",
        };
        string kindName = kind.ToString().ToLowerInvariant();
        return $"--mask: {bits} bits cannot work with --ops-kind {kindName}: {why}; use --mask {string.Join(" or ", ranges)}"
               + (kind is DmaOpsKind.Direct or DmaOpsKind.Swiotlb ? " (for this working set)" : kind == DmaOpsKind.Iommu ? $" (for {threads} threads)" : "") + ".";
    }

    /// <summary>
    /// Why the run's devices cannot commit <paramref name="inject"/>, or null when they can: the misuse is made on the
    /// run's own devices, so its report names one of them and the run shows the checker at work on them.
    /// </summary>
    internal static string? InjectionProblem(DmaInjection inject, DmaOpsKind kind, int devices, bool deferred) => inject switch
    {
        DmaInjection.MissingSync when kind is DmaOpsKind.Direct or DmaOpsKind.Iommu =>
            $"--inject missing-sync: {kind.ToString().ToLowerInvariant()} devices never bounce, and the check is of a bounced buffer read before sync_for_cpu; use --ops-kind swiotlb or xen.",
        DmaInjection.StaleIotlb when kind != DmaOpsKind.Iommu =>
            $"--inject stale-iotlb: {kind.ToString().ToLowerInvariant()} devices have no IOTLB; use --ops-kind iommu with --deferred-flush.",
        DmaInjection.StaleIotlb when !deferred =>
            "--inject stale-iotlb: without --deferred-flush every unmap invalidates the IOTLB at once and no entry goes stale; add --deferred-flush.",
        DmaInjection.WrongPool when devices < 2 =>
            "--inject wrong-pool: a page goes to another device's DMA pool, and the run has one device; use --devices 2 or more.",
        _ => null,
    };

    private static ulong Mask(int bits) => bits >= 64 ? ulong.MaxValue : (1UL << bits) - 1;

    private static bool MaskWorks(DmaOpsKind kind, int bits, long workingSet, int threads, int devices) => kind switch
    {
        DmaOpsKind.Xen => bits >= 32,
        // IOVA page 0 is reserved: the space is pages 1 .. mask >> 12.
        DmaOpsKind.Iommu => Mask(bits) >> 12 >= (ulong)IovaPagesPerThread * (ulong)(threads + 1),
        // Lanes and DMA pools take DMA32 memory for a mask of 32 bits or less, Normal memory above: all of it must be below the mask.
        _ => (ulong)(bits <= 32 ? Dma32Base + Dma32Bytes(workingSet, threads, devices) : NormalBase + NormalBytes(workingSet)) - 1 <= Mask(bits),
    };

    internal DmaMachine(StressSettings s, DmaStressSettings d)
    {
        _memory = new PhysicalMemory(new MemoryOptions
        {
            Dma32Bytes = Dma32Bytes(s.WorkingSetBytes, s.Threads, d.Devices), NormalBytes = NormalBytes(s.WorkingSetBytes),
            Xen = d.OpsKind == DmaOpsKind.Xen, XenSeed = s.Seed,
        });
        _platform = new DmaPlatform(_memory, new DmaPlatformOptions
        {
            Checker = true, DeferredFlush = d.DeferredFlush, SwiotlbBytes = 64L << 20,
        });
        _devices = new DmaDevice[d.Devices];
        for (int i = 0; i < _devices.Length; i++)
            _devices[i] = _platform.CreateDevice(new DmaDeviceOptions
            {
                Name = $"dev{i}", OpsKind = d.OpsKind, MaskBits = d.MaskBits, Coherent = i % 4 != 3, // every fourth does not snoop
            });
        _pools = _devices.Select(x => new DmaPagePool(x)).ToArray();
        Lanes = Enumerable.Range(0, s.Threads).Select(i => new DmaLane(_platform, _devices, _pools, s.Seed, i)).ToArray();
        _inject = d.Inject;
        if (_inject != DmaInjection.None) Inject(_inject);
    }

    private DmaMachine(StressSettings s)
    {
        _memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 32L << 20, Dma32Bytes = 256L << 20, NormalBytes = 64L << 20 });
        _platform = new DmaPlatform(_memory, new DmaPlatformOptions { Checker = true, DeferredFlush = true, SwiotlbBytes = 32L << 20 });
        _devices =
        [
            _platform.CreateDevice(new DmaDeviceOptions { Name = "mixed-iommu", OpsKind = DmaOpsKind.Iommu }),
            _platform.CreateDevice(new DmaDeviceOptions { Name = "mixed-bounce", OpsKind = DmaOpsKind.Swiotlb, MaskBits = 32 }),
            _platform.CreateDevice(new DmaDeviceOptions { Name = "mixed-direct", OpsKind = DmaOpsKind.Direct, MaskBits = 32, Coherent = false }),
        ];
        _pools = _devices.Select(x => new DmaPagePool(x)).ToArray();
        Lanes = Enumerable.Range(0, s.Threads).Select(i => new DmaLane(_platform, _devices, _pools, s.Seed, i)).ToArray();
    }

    /// <summary>The small machine `mixed` interleaves DMA steps on.</summary>
    internal static DmaMachine ForMixed(StressSettings s) => new(s);

    /// <summary>
    /// Tear down (lanes, pools, devices: the checker reports anything still mapped) and say what is wrong: every
    /// checker report, bounce slots still in use, and an injected misuse the checker did not catch.
    /// </summary>
    internal List<string> Finish()
    {
        var problems = new List<string>();
        if (_finished) return problems;
        _finished = true;
        foreach (var lane in Lanes) lane.Finish();
        foreach (var p in _pools) p.Dispose();
        _faults = _devices.Sum(x => x.Faults);
        _stale = _devices.Sum(x => x.StaleIotlbAccesses);
        _maintenance = _devices.Sum(x => x.CacheMaintenanceOperations);
        foreach (var dev in _devices) dev.Dispose();
        _swiotlbLeft = _platform.SwiotlbUsedBytes;
        var reports = _platform.Checker!.Reports;
        _reports = reports.Count;
        problems.AddRange(reports.Take(20).Select(r => r.ToString()));
        if (reports.Count > 20) problems.Add($"... and {reports.Count - 20} more checker reports");
        if (_swiotlbLeft != 0) problems.Add($"{_swiotlbLeft} bytes of swiotlb bounce slots still in use after every device was released");
        if (_inject != DmaInjection.None)
        {
            var expected = _inject switch
            {
                DmaInjection.MissingSync => DmaCheckClass.MissingSyncForCpu,
                DmaInjection.StaleIotlb => DmaCheckClass.StaleIotlbAccess,
                _ => DmaCheckClass.WrongPool,
            };
            if (!reports.Any(r => r.Class == expected))
                problems.Add($"the injected {_inject} was NOT caught by the checker (expected a {expected} report)");
        }
        _platform.Dispose();
        _memory.Dispose();
        return problems;
    }

    /// <summary>What the devices did, for the summary and the JSON's scenario object.</summary>
    internal IEnumerable<(string Name, string Text, double Value)> Report()
    {
        long steps = Lanes.Sum(l => l.Steps), bytes = Lanes.Sum(l => l.Bytes);
        yield return ("dma.round_trips", $"dma round trips       {steps:N0} ({Size.Format(bytes)} through devices, {Lanes.Sum(l => l.Lists):N0} scatterlists, {Lanes.Sum(l => l.Coherent):N0} DMA-pool pages)", steps);
        yield return ("dma.bytes", "", bytes);
        yield return ("dma.faults", $"dma faults            {_faults:N0} (through stale IOTLB entries: {_stale:N0})", _faults);
        yield return ("dma.stale_iotlb_accesses", "", _stale);
        yield return ("dma.cache_maintenance", $"cache maintenance     {_maintenance:N0} flushes for non-coherent devices", _maintenance);
        yield return ("dma.checker_reports", $"dma checker           {_reports:N0} reports", _reports);
        yield return ("dma.swiotlb_left_bytes", "", _swiotlbLeft);
    }

    // One misuse, committed once before the lanes start, on the run's own first devices (InjectionProblem has
    // checked they can): its report names one of them, and their counters (stale accesses) count it.
    private void Inject(DmaInjection what)
    {
        var dev = _devices[0];
        switch (what)
        {
            case DmaInjection.MissingSync:
            {
                // Under Xen only some buffers bounce: two pages whose machine frames are not contiguous, or lie above
                // the mask, always do.
                var block = BouncingBlock(dev);
                ulong dma = dev.MapPage(block, 0, 8192, DmaDirection.FromDevice);
                dev.MappingError(dma);
                dev.Engine.Write(dma, Enumerable.Range(0, 8192).Select(i => (byte)(i + 1)).ToArray());
                _platform.CpuRead(block, 0, new byte[64]); // the bug: no SyncForCpu before reading
                dev.UnmapPage(dma, 8192, DmaDirection.FromDevice);
                _memory.FreeBlock(block);
                break;
            }
            case DmaInjection.StaleIotlb:
            {
                var block = _memory.AllocateBlock(Zone.Dma32, 0);
                for (int attempt = 0; attempt < 8 && dev.StaleIotlbAccesses == 0; attempt++)
                {
                    ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
                    dev.MappingError(dma);
                    dev.Engine.Write(dma, new byte[8]);  // the IOTLB now holds the translation
                    dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
                    try { dev.Engine.Write(dma, new byte[8]); } // the bug: the device was not stopped before unmap
                    catch (DmaFaultException) { } // the 10 ms flush won the race this time: try again
                }
                _memory.FreeBlock(block);
                break;
            }
            case DmaInjection.WrongPool:
            {
                var page = _pools[0].Allocate(CachingMode.WriteBack, 0);
                try { _pools[1].Free(page); } catch (DmaMappingException) { } // the bug: another device's pool; refused and reported
                _pools[0].Free(page);
                break;
            }
        }
    }

    // A DMA32 block of two pages a mapping of which bounces on `dev` (every one does under swiotlb).
    private PageHandle BouncingBlock(DmaDevice dev)
    {
        var tried = new List<PageHandle>();
        try
        {
            for (int i = 0; i < 256; i++)
            {
                var b = _memory.AllocateBlock(Zone.Dma32, 1);
                ulong machine = _memory.MachineAddress(b);
                if (dev.OpsKind == DmaOpsKind.Swiotlb || !_memory.IsMachineContiguous(_memory.FrameOf(b), 1) || machine + 8191 > dev.Mask) return b;
                tried.Add(b);
            }
        }
        finally
        {
            foreach (var b in tried) _memory.FreeBlock(b);
        }
        throw new InvalidOperationException($"--inject missing-sync: none of 256 DMA32 blocks bounces on {dev.Name} (its machine frames are contiguous and below its mask)");
    }
}
