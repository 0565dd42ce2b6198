using PagePool.Dma;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// The reference of the DMA side, kept the obvious way: per device the DMA ranges it holds live (streaming mappings
/// of pool buffers, and the blocks of the page arrays bound to it) and the faults it caused; per mapping its bytes.
/// A device that bounces sees a copy of the buffer (the bounce slots), which moves to and from the CPU's bytes only
/// where swiotlb.c says: at map, at sync and at unmap. Everything else reads and writes the CPU's bytes directly.
/// </summary>
public sealed class DmaModel
{
    /// <summary>A DMA range a device holds, and what holds it (a <see cref="Mapping"/>, a coherent block or a page array).</summary>
    public readonly record struct Range(ulong Dma, long Size, object Owner);

    public sealed class Device(int index, DmaDeviceOptions options)
    {
        public readonly int Index = index;
        public readonly DmaOpsKind Kind = options.OpsKind;
        public readonly List<Range> Live = new();
        /// <summary>Addresses of ranges undone lately: where a device that kept an old address would go.</summary>
        public readonly List<ulong> Retired = new();
        public long Faults;

        public bool Bounces => Kind == DmaOpsKind.Swiotlb;

        /// <summary>The mappings the checker tracks: one per streaming mapping, coherent block or bound array (one scatterlist, one range per page).</summary>
        public int Entries => Live.Select(r => r.Owner).Distinct().Count();

        /// <summary>Only an IOMMU enforces direction: a ToDevice page is read-only to the device, a FromDevice one write-only.</summary>
        public bool EnforcesDirection => Kind == DmaOpsKind.Iommu;

        /// <summary>
        /// log2 of the unit a live range makes reachable around its bytes: the IO page (IOMMU), the 2 KiB swiotlb
        /// slot (bouncing), the 64-byte cache line (direct: the simulation's windows).
        /// </summary>
        public int GranuleShift => Kind switch { DmaOpsKind.Iommu => 12, DmaOpsKind.Swiotlb => 11, _ => 6 };

        /// <summary>True when some live range of this device reaches <paramref name="address"/>.</summary>
        public bool Reaches(ulong address)
        {
            ulong g = address >> GranuleShift;
            foreach (var r in Live)
                if (g >= r.Dma >> GranuleShift && g <= (r.Dma + (ulong)r.Size - 1) >> GranuleShift) return true;
            return false;
        }

        public void Add(ulong dma, long size, object owner) => Live.Add(new Range(dma, size, owner));

        public void Retire(object owner)
        {
            for (int i = Live.Count - 1; i >= 0; i--)
            {
                if (Live[i].Owner != owner) continue;
                if (Retired.Count == 64) Retired.RemoveAt(0);
                Retired.Add(Live[i].Dma);
                Live.RemoveAt(i);
            }
        }
    }

    /// <summary>A streaming mapping of part of one block of a pool buffer.</summary>
    public sealed class Mapping(int tag, Device device, PoolModel.Buffer buffer, int block, int bufferOffset, int blockOffset, int size, DmaDirection direction, bool single)
    {
        /// <summary>The tag of the step that mapped it.</summary>
        public readonly int Tag = tag;
        public readonly Device Device = device;
        public readonly PoolModel.Buffer Buffer = buffer;
        public readonly int Block = block, BufferOffset = bufferOffset, BlockOffset = blockOffset, Size = size;
        public readonly DmaDirection Direction = direction;
        public readonly bool Single = single;
        public ulong Dma;
        /// <summary>What the device sees of a bounced mapping (the slots); null when the device reaches the buffer itself.</summary>
        public byte[]? Bounce;
        /// <summary>The device wrote the slots and the CPU has not synced since: a CPU read is reported (stale data).</summary>
        public bool Dirty;

        public override string ToString() => $"{Device.Kind} mapping of buffer {Buffer.Id} block {Block} [{BlockOffset}, +{Size}) {Direction} at 0x{Dma:x}";
    }

    /// <summary>Coherent memory: one block the CPU and the device both reach, no syncs; it reads zero when allocated.</summary>
    public sealed class Coherent(int tag, Device device, int pages)
    {
        public readonly int Tag = tag;
        public readonly Device Device = device;
        public readonly byte[] Bytes = new byte[pages * PagePool.Memory.PhysicalMemory.PageSize];
        public PagePool.Dma.DmaCoherentBlock Real;

        public override string ToString() => $"coherent block of {Bytes.Length} bytes on {Device.Kind} at 0x{Real.DmaAddress:x}";
    }

    public readonly Device[] Devices = ModelDevices.Options.Select((o, i) => new Device(i, o)).ToArray();
    public readonly List<Coherent> CoherentBlocks = new();
    public readonly List<Mapping> Live = new();

    /// <summary>dma_map: the device now reaches the range; a bouncing device gets a copy of the CPU's bytes (whatever the direction).</summary>
    public void Map(Mapping m)
    {
        if (m.Device.Bounces) m.Bounce = m.Buffer.Bytes!.AsSpan(m.BufferOffset, m.Size).ToArray();
        Live.Add(m);
        m.Buffer.Mappings.Add(m);
        m.Device.Add(m.Dma, m.Size, m);
    }

    /// <summary>dma_unmap: bounce back for FromDevice and Bidirectional; the range is gone.</summary>
    public void Unmap(Mapping m)
    {
        if (m.Bounce is not null && m.Direction != DmaDirection.ToDevice) m.Bounce.CopyTo(m.Buffer.Bytes!.AsSpan(m.BufferOffset));
        Live.Remove(m);
        m.Buffer.Mappings.Remove(m);
        m.Device.Retire(m);
    }

    /// <summary>dma_sync_*_for_cpu / _for_device of [at, at+length) of a mapping, with its own direction.</summary>
    public void Sync(Mapping m, int at, int length, bool forCpu)
    {
        if (m.Bounce is null) return; // cache maintenance only: the bytes are the same ones
        if (forCpu)
        {
            if (m.Direction != DmaDirection.ToDevice) m.Bounce.AsSpan(at, length).CopyTo(m.Buffer.Bytes!.AsSpan(m.BufferOffset + at));
            m.Dirty = false;
        }
        else if (m.Direction != DmaDirection.FromDevice)
        {
            m.Buffer.Bytes!.AsSpan(m.BufferOffset + at, length).CopyTo(m.Bounce.AsSpan(at));
        }
    }

    /// <summary>The bytes the device reaches through a mapping: the slots when bounced, else the buffer itself.</summary>
    public static Span<byte> DeviceView(Mapping m, int at, int length)
        => m.Bounce is { } b ? b.AsSpan(at, length) : m.Buffer.Bytes!.AsSpan(m.BufferOffset + at, length);

    /// <summary>False when the access faults: an IOMMU refuses a write through ToDevice and a read through FromDevice.</summary>
    public static bool Permits(Mapping m, bool write)
        => !m.Device.EnforcesDirection || m.Direction == DmaDirection.Bidirectional || (write ? m.Direction == DmaDirection.FromDevice : m.Direction == DmaDirection.ToDevice);
}
