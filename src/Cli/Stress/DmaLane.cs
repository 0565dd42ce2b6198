using PagePool.Dma;
using PagePool.Memory;

namespace PagePool.Cli.Stress;

/// <summary>
/// One thread's DMA work: its own buffers, and steps that each map, let a device read and write through its DMA
/// addresses, sync, verify every byte on both sides, and unmap, so nothing is left mapped between steps. What a step
/// does (device, kind, buffer, range, direction) is drawn from the worker's seeded generator and folded into its
/// sequence hash; the bytes moved come from the lane's own generator, seeded from the run's seed and the lane.
/// </summary>
internal sealed class DmaLane
{
    private const int Buffers = 4, BufferOrder = 4; // 64 KiB buffers: within swiotlb's largest mapping

    /// <summary>The DMA32 (or Normal) memory a lane holds for the whole run.</summary>
    internal const long HeldBytes = (long)Buffers * (PhysicalMemory.PageSize << BufferOrder);

    private readonly DmaPlatform _platform;
    private readonly PhysicalMemory _memory;
    private readonly DmaDevice[] _devices;
    private readonly DmaPagePool[] _pools;
    private readonly PageHandle[] _buffers = new PageHandle[Buffers];
    private readonly Random _bytes;
    private readonly byte[] _a = new byte[64 << 10], _b = new byte[64 << 10];

    internal long Steps, Bytes, VerifyFailures, Coherent, Lists;
    internal readonly List<string> Failures = new();

    internal DmaLane(DmaPlatform platform, DmaDevice[] devices, DmaPagePool[] pools, ulong seed, int lane)
    {
        _platform = platform;
        _memory = platform.Memory;
        _devices = devices;
        _pools = pools;
        _bytes = new Random((int)SplitMix.Mix(SplitMix.Mix(seed) + (ulong)lane + 1)); // every bit of the seed counts
        var zone = devices.Any(d => d.MaskBits <= 32) ? Zone.Dma32 : Zone.Normal; // a 32-bit direct device reaches only DMA32
        for (int i = 0; i < Buffers; i++) _buffers[i] = _memory.AllocateBlock(zone, BufferOrder);
    }

    /// <summary>Set to flip one byte the device wrote, behind the library's back, before the CPU checks it (--inject-corruption).</summary>
    internal bool CorruptNext;

    /// <summary>One step: a streaming round trip, now and then a scatterlist or a coherent DMA-pool page.</summary>
    internal void Step(StressWorker w)
    {
        var dev = _devices[Draw(w, _devices.Length)];
        int r = Draw(w, 16);
        if (r == 0) CoherentRoundTrip(_pools[Array.IndexOf(_devices, dev)]);
        else if (r == 1) ListRoundTrip(w, dev);
        else StreamingRoundTrip(w, dev);
        Steps++;
    }

    // A number in [0, n) from the worker's generator, folded into its sequence hash.
    private static int Draw(StressWorker w, int n)
    {
        int v = w.Next(n);
        w.Fold((ulong)v);
        return v;
    }

    private void StreamingRoundTrip(StressWorker w, DmaDevice dev)
    {
        var buf = _buffers[Draw(w, Buffers)];
        int size = 1 + Draw(w, (16 << 10) - 1), offset = Draw(w, (64 << 10) - size);
        var dir = (DmaDirection)Draw(w, 3);
        var a = _a.AsSpan(0, size);
        var b = _b.AsSpan(0, size);
        _bytes.NextBytes(a);
        if (dir != DmaDirection.FromDevice) _memory.Write(buf, offset, a);
        ulong dma = dev.MapPage(buf, offset, size, dir);
        if (dev.MappingError(dma)) { Fail($"{dev.Name}: mapping error"); return; }
        if (dir != DmaDirection.FromDevice)
        {
            dev.Engine.Read(dma, b);
            Check(a, b, dev, "device read what the CPU wrote before map");
        }
        if (dir != DmaDirection.ToDevice)
        {
            _bytes.NextBytes(a);
            dev.Engine.Write(dma, a);
            dev.SyncForCpu(dma, size, dir);
            if (CorruptNext)
            {
                _memory.GetSpan(buf)[offset + size / 2] ^= 0xFF; // behind the library's back: the check below must see it
                CorruptNext = false;
            }
            _platform.CpuRead(buf, offset, b);
            Check(a, b, dev, "CPU read what the device wrote after sync_for_cpu");
        }
        if (dir == DmaDirection.Bidirectional)
        {
            _bytes.NextBytes(a);
            _memory.Write(buf, offset, a);
            dev.SyncForDevice(dma, size, dir);
            dev.Engine.Read(dma, b);
            Check(a, b, dev, "device read what the CPU wrote after sync_for_device");
        }
        dev.UnmapPage(dma, size, dir);
        Bytes += size;
    }

    private void ListRoundTrip(StressWorker w, DmaDevice dev)
    {
        var sg = new DmaScatterlist();
        int n = 2 + Draw(w, Buffers - 1);
        for (int i = 0; i < n; i++) sg.Add(_buffers[i], 0, 4096 * (1 + Draw(w, 3)));
        dev.MapScatterlist(sg, DmaDirection.FromDevice);
        var mark = new byte[8];
        int page = 0;
        foreach (ulong p in sg.DmaPages())
        {
            BitConverter.TryWriteBytes(mark, ((long)dev.Id << 32) | (uint)page++);
            dev.Engine.Write(p, mark);
        }
        dev.SyncScatterlistForCpu(sg, DmaDirection.FromDevice);
        page = 0;
        var got = new byte[8];
        for (int e = 0; e < sg.Count; e++)
            for (int off = 0; off < sg[e].Length; off += 4096)
            {
                _platform.CpuRead(sg[e].Block, off, got);
                if (BitConverter.ToInt64(got) != (((long)dev.Id << 32) | (uint)page++)) Fail($"{dev.Name}: scatterlist page {page - 1} does not hold what the device wrote");
            }
        dev.UnmapScatterlist(sg, sg.Count, DmaDirection.FromDevice);
        Lists++;
    }

    private void CoherentRoundTrip(DmaPagePool pool)
    {
        var p = pool.Allocate(CachingMode.WriteCombined, 0);
        var a = _a.AsSpan(0, 4096);
        var b = _b.AsSpan(0, 4096);
        _platform.CpuRead(p.Block, 0, b);
        if (b.IndexOfAnyExcept((byte)0) >= 0) Fail($"{pool.Device.Name}: a DMA-pool page did not come back zeroed");
        _bytes.NextBytes(a);
        pool.Device.Engine.Write(p.DmaAddress, a);
        _platform.CpuRead(p.Block, 0, b);
        Check(a, b, pool.Device, "CPU read of coherent memory the device wrote");
        pool.Free(p);
        Coherent++;
    }

    private void Check(ReadOnlySpan<byte> want, ReadOnlySpan<byte> got, DmaDevice dev, string what)
    {
        if (!want.SequenceEqual(got)) Fail($"{dev.Name} ({dev.OpsKind}): {what}: bytes differ at {want.CommonPrefixLength(got)}");
    }

    private void Fail(string message)
    {
        VerifyFailures++;
        if (Failures.Count < 8) Failures.Add(message);
    }

    /// <summary>Give the buffers back.</summary>
    internal void Finish()
    {
        foreach (var b in _buffers) _memory.FreeBlock(b);
    }
}
