using System.Diagnostics;
using System.Text.Json;
using PagePool.Dma;
using PagePool.Memory;

namespace PagePool.Cli.Stress;

/// <summary>
/// `pagepool stress dma`: several devices of one ops kind, many threads mapping, letting the devices read and
/// write through their DMA addresses, syncing, verifying every byte and unmapping, with the checker on. With
/// --inject one misuse is committed once and the run must end with the checker's report of it (exit 1).
/// </summary>
internal static class DmaStressRunner
{
    internal static int Run(StressSettings s, DmaStressSettings d)
    {
        long dma32 = Math.Min(2L << 30, Math.Max(128L << 20, s.WorkingSetBytes)) + (64L << 20);
        using var memory = new PhysicalMemory(new MemoryOptions
        {
            Dma32Bytes = Math.Min(dma32, (4L << 30) - (16L << 20)), NormalBytes = Math.Max(256L << 20, s.WorkingSetBytes),
            Xen = d.OpsKind == DmaOpsKind.Xen, XenSeed = s.Seed,
        });
        using var platform = new DmaPlatform(memory, new DmaPlatformOptions
        {
            Checker = true, DeferredFlush = d.DeferredFlush || d.Inject == DmaInjection.StaleIotlb, SwiotlbBytes = 64L << 20,
        });
        var devices = new DmaDevice[d.Devices];
        var pools = new DmaPagePool[d.Devices];
        for (int i = 0; i < devices.Length; i++)
        {
            devices[i] = platform.CreateDevice(new DmaDeviceOptions
            {
                Name = $"dev{i}", OpsKind = d.OpsKind, MaskBits = d.MaskBits, Coherent = i % 4 != 3, // every fourth does not snoop
            });
            pools[i] = new DmaPagePool(devices[i]);
        }
        var lanes = new DmaLane[s.Threads];
        for (int i = 0; i < lanes.Length; i++) lanes[i] = new DmaLane(platform, devices, pools, (int)s.Seed * 7919 + i);

        Console.Error.WriteLine($"stress dma: {s.Threads} threads, {d.Devices} {d.OpsKind} devices, {d.MaskBits}-bit mask, " +
                                $"{(platform.Options.DeferredFlush ? "deferred" : "strict")} IOTLB flush, {Describe(s)}, checker on" +
                                (d.Inject != DmaInjection.None ? $", injecting {d.Inject}" : ""));
        var clock = Stopwatch.StartNew();
        int stop = 0;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        long perThread = s.Operations is { } total ? Math.Max(1, total / s.Threads) : long.MaxValue;
        var threads = lanes.Select((lane, i) => new Thread(() =>
        {
            try
            {
                while (lane.Steps < perThread && Volatile.Read(ref stop) == 0) lane.Step();
            }
            catch (Exception e) when (e is PagePoolException or InvalidOperationException)
            {
                errors.Enqueue(e);
                Volatile.Write(ref stop, 1);
            }
        }) { Name = $"stress-dma-{i}", IsBackground = true }).ToArray();
        foreach (var t in threads) t.Start();
        if (d.Inject != DmaInjection.None) Inject(d.Inject, platform, memory);
        while (!threads.All(t => t.Join(100)))
            if (s.Duration is { } limit && clock.Elapsed >= limit) Volatile.Write(ref stop, 1);
        var elapsed = clock.Elapsed;

        foreach (var lane in lanes) lane.Finish();
        foreach (var p in pools) p.Dispose();
        long faults = devices.Sum(x => x.Faults), stale = devices.Sum(x => x.StaleIotlbAccesses), maintenance = devices.Sum(x => x.CacheMaintenanceOperations);
        foreach (var dev in devices) dev.Dispose(); // the checker reports anything still mapped
        long swiotlbLeft = platform.SwiotlbUsedBytes;

        var reports = platform.Checker!.Reports;
        long steps = lanes.Sum(l => l.Steps), verifyFailures = lanes.Sum(l => l.VerifyFailures);
        var o = Console.Out;
        o.WriteLine();
        o.WriteLine($"scenario dma ({d.OpsKind}), {s.Threads} threads, {elapsed.TotalSeconds:0.00} s, {steps:N0} round trips ({steps / Math.Max(1e-9, elapsed.TotalSeconds):N0}/s)");
        o.WriteLine($"bytes through devices {Size.Format(lanes.Sum(l => l.Bytes))}, scatterlists {lanes.Sum(l => l.Lists):N0}, DMA-pool pages {lanes.Sum(l => l.Coherent):N0}");
        o.WriteLine($"cache maintenance     {maintenance:N0} flushes for non-coherent devices");
        o.WriteLine($"dma faults            {faults:N0} (through stale IOTLB entries: {stale:N0})");
        o.WriteLine($"swiotlb in use at end {Size.Format(swiotlbLeft)}");
        o.WriteLine($"verification          every byte: {verifyFailures} failures");
        foreach (var f in lanes.SelectMany(l => l.Failures).Take(8)) o.WriteLine($"  {f}");
        foreach (var e in errors) o.WriteLine($"error                 {e.GetType().Name}: {e.Message}");
        o.WriteLine($"checker               {reports.Count} reports");
        foreach (var r in reports.Take(20)) o.WriteLine($"  {r}");

        bool ok = verifyFailures == 0 && errors.IsEmpty && reports.Count == 0 && swiotlbLeft == 0;
        if (d.Inject != DmaInjection.None)
        {
            var expected = d.Inject switch
            {
                DmaInjection.MissingSync => DmaCheckClass.MissingSyncForCpu,
                DmaInjection.StaleIotlb => DmaCheckClass.StaleIotlbAccess,
                _ => DmaCheckClass.WrongPool,
            };
            bool caught = reports.Any(r => r.Class == expected);
            o.WriteLine($"injected {d.Inject}: {(caught ? $"caught by the checker ({expected})" : "NOT caught")}");
        }
        if (s.JsonPath is not null) WriteJson(s.JsonPath, d, elapsed, steps, verifyFailures, faults, reports.Count, errors.Count);
        return ok ? ExitCodes.Ok : ExitCodes.Failed;
    }

    // One misuse, on devices of its own so the lanes' work stays clean and the report names the culprit.
    private static void Inject(DmaInjection what, DmaPlatform platform, PhysicalMemory memory)
    {
        var block = memory.AllocateBlock(Zone.Dma32, 0);
        switch (what)
        {
            case DmaInjection.MissingSync:
            {
                var dev = platform.CreateDevice(new DmaDeviceOptions { Name = "inject-bounce", OpsKind = DmaOpsKind.Swiotlb, MaskBits = 32 });
                ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.FromDevice);
                dev.MappingError(dma);
                dev.Engine.Write(dma, Enumerable.Range(0, 4096).Select(i => (byte)(i + 1)).ToArray());
                platform.CpuRead(block, 0, new byte[64]); // the bug: no SyncForCpu before reading
                dev.UnmapPage(dma, 4096, DmaDirection.FromDevice);
                dev.Dispose();
                break;
            }
            case DmaInjection.StaleIotlb:
            {
                var dev = platform.CreateDevice(new DmaDeviceOptions { Name = "inject-iommu", OpsKind = DmaOpsKind.Iommu });
                for (int attempt = 0; attempt < 8 && dev.StaleIotlbAccesses == 0; attempt++)
                {
                    ulong dma = dev.MapPage(block, 0, 4096, DmaDirection.Bidirectional);
                    dev.MappingError(dma);
                    dev.Engine.Write(dma, new byte[8]);  // the IOTLB now holds the translation
                    dev.UnmapPage(dma, 4096, DmaDirection.Bidirectional);
                    try { dev.Engine.Write(dma, new byte[8]); } // the bug: the device was not stopped before unmap
                    catch (DmaFaultException) { } // the 10 ms flush won the race this time: try again
                }
                dev.Dispose();
                break;
            }
            case DmaInjection.WrongPool:
            {
                var a = platform.CreateDevice(new DmaDeviceOptions { Name = "inject-pool-a", OpsKind = DmaOpsKind.Direct, MaskBits = 32 });
                var b = platform.CreateDevice(new DmaDeviceOptions { Name = "inject-pool-b", OpsKind = DmaOpsKind.Direct, MaskBits = 32 });
                using (var pa = new DmaPagePool(a))
                using (var pb = new DmaPagePool(b))
                {
                    var page = pa.Allocate(CachingMode.WriteBack, 0);
                    try { pb.Free(page); } catch (DmaMappingException) { } // the bug: the other device's pool; refused and reported
                    pa.Free(page);
                }
                a.Dispose();
                b.Dispose();
                break;
            }
        }
        memory.FreeBlock(block);
    }

    private static string Describe(StressSettings s)
        => s.Operations is { } n ? $"{n:N0} round trips" : $"{s.Duration!.Value.TotalSeconds:0.###} s";

    private static void WriteJson(string path, DmaStressSettings d, TimeSpan elapsed, long steps, long verifyFailures, long faults, int reports, int errors)
    {
        using var stream = File.Create(path);
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("scenario", "dma");
        w.WriteString("ops_kind", d.OpsKind.ToString().ToLowerInvariant());
        w.WriteNumber("devices", d.Devices);
        w.WriteNumber("elapsed_s", Math.Round(elapsed.TotalSeconds, 3));
        w.WriteNumber("round_trips", steps);
        w.WriteNumber("round_trips_per_s", Math.Round(steps / Math.Max(1e-9, elapsed.TotalSeconds), 1));
        w.WriteNumber("verify_failures", verifyFailures);
        w.WriteNumber("dma_faults", faults);
        w.WriteNumber("checker_reports", reports);
        w.WriteNumber("errors", errors);
        w.WriteEndObject();
    }
}
