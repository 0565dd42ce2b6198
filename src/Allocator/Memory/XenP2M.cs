namespace PagePool.Memory;

/// <summary>
/// The Xen pseudo-physical to machine frame table (P2M) of shared/seeds/002: a guest's frames are contiguous
/// and "below 4 GiB" in its own pseudo-physical space, but the hypervisor backs them with machine frames that are
/// scattered and mostly above 4 GiB, so a DMA32 page handed to a 32-bit device needs bouncing or an exchange.
/// </summary>
/// <remarks>
/// The mapping is a seeded bijection, computed rather than stored: pseudo frames are scrambled over the machine
/// frame space less a window [2 GiB, 4 GiB) that the hypervisor keeps for exchanges. <see cref="MakeContiguous"/>
/// is xen_create_contiguous_region: it backs a pseudo range with machine-contiguous frames from that window,
/// below the caller's limit; <see cref="DestroyContiguous"/> gives them back and restores the scrambled backing.
/// Exchanged ranges are kept in small override tables; everything else costs a few multiplies per lookup.
/// </remarks>
internal sealed class XenP2M
{
    private const ulong WindowStart = 0x80000, WindowFrames = 0x80000; // machine frames [2 GiB, 4 GiB)

    private readonly int _bits;
    private readonly ulong _mask, _domain, _a, _b, _aInv, _bInv;
    private readonly int _shift;
    private readonly Dictionary<ulong, ulong> _p2mOverride = new();
    private readonly Dictionary<ulong, ulong> _m2pOverride = new();
    private readonly Dictionary<ulong, (ulong Machine, int Order)> _exchanged = new();
    private readonly bool[] _windowUsed = new bool[(int)WindowFrames];
    private readonly Lock _lock = new();
    private int _exchangedCount; // published count of exchanged ranges: lookups skip the lock while it is 0

    /// <summary>Ranges exchanged for machine-contiguous frames and not given back yet.</summary>
    internal int ExchangedCount => Volatile.Read(ref _exchangedCount);

    /// <summary>A P2M covering pseudo frames below <paramref name="pseudoFrames"/>, scrambled by <paramref name="seed"/>.</summary>
    internal XenP2M(ulong pseudoFrames, ulong seed)
    {
        _bits = 24; // 64 GiB of machine memory at least
        while ((1UL << _bits) - WindowFrames < pseudoFrames * 2) _bits++;
        _mask = (1UL << _bits) - 1;
        _domain = (1UL << _bits) - WindowFrames;
        _shift = _bits / 2 + 1;
        var rng = new SplitMix(seed);
        _a = (rng.Next() | 1) & _mask;
        _b = (rng.Next() | 1) & _mask;
        _aInv = InverseOdd(_a) & _mask;
        _bInv = InverseOdd(_b) & _mask;
    }

    /// <summary>The machine frame backing a pseudo frame.</summary>
    internal ulong ToMachine(ulong pfn)
    {
        if (Volatile.Read(ref _exchangedCount) != 0)
            lock (_lock)
                if (_p2mOverride.TryGetValue(pfn, out ulong m)) return m;
        ulong r = pfn;
        do r = Scramble(r); while (r >= _domain); // cycle-walk keeps the bijection inside the domain
        return r < WindowStart ? r : r + WindowFrames;
    }

    /// <summary>The pseudo frame a machine frame backs, or false when it backs none (M2P).</summary>
    internal bool TryToPseudo(ulong mfn, out ulong pfn)
    {
        lock (_lock)
        {
            if (_m2pOverride.TryGetValue(mfn, out pfn)) return true;
            if (mfn >= WindowStart && mfn < WindowStart + WindowFrames) return false;
        }
        ulong rank = mfn < WindowStart ? mfn : mfn - WindowFrames;
        if (rank >= _domain) return false;
        ulong x = rank;
        do x = Unscramble(x); while (x >= _domain);
        pfn = x;
        if (Volatile.Read(ref _exchangedCount) == 0) return true;
        lock (_lock)
            return !_p2mOverride.ContainsKey(pfn); // exchanged away: the old machine frame backs nothing now
    }

    /// <summary>
    /// Back 2^order pseudo frames from <paramref name="pfn"/> with machine-contiguous frames whose last byte lies
    /// below <paramref name="limitAddress"/> (xen_create_contiguous_region). Returns false when the window has no
    /// aligned run free below the limit.
    /// </summary>
    internal bool MakeContiguous(ulong pfn, int order, ulong limitAddress, out ulong machineFrame)
    {
        ulong count = 1UL << order;
        // The frames wholly at or below the limit, (limitAddress + 1) / PageSize, without the + 1 that wraps a
        // 64-bit mask to 0 (no frame at all would fit).
        ulong lastByte = PhysicalMemory.PageSize - 1;
        ulong framesBelow = (limitAddress >> PhysicalMemory.PageShift) + ((limitAddress & lastByte) == lastByte ? 1UL : 0UL);
        ulong limitFrame = Math.Min(framesBelow, WindowStart + WindowFrames);
        lock (_lock)
        {
            if (_exchanged.TryGetValue(pfn, out var had) && had.Order == order)
            {
                machineFrame = had.Machine;
                return true;
            }
            for (ulong start = WindowStart; start + count <= limitFrame; start += count)
            {
                int i = (int)(start - WindowStart);
                if (Array.IndexOf(_windowUsed, true, i, (int)count) >= 0) continue;
                Array.Fill(_windowUsed, true, i, (int)count);
                for (ulong k = 0; k < count; k++)
                {
                    _p2mOverride[pfn + k] = start + k;
                    _m2pOverride[start + k] = pfn + k;
                }
                _exchanged[pfn] = (start, order);
                Volatile.Write(ref _exchangedCount, _exchanged.Count);
                machineFrame = start;
                return true;
            }
        }
        machineFrame = 0;
        return false;
    }

    /// <summary>Undo <see cref="MakeContiguous"/> (xen_destroy_contiguous_region); false if the range was not exchanged.</summary>
    internal bool DestroyContiguous(ulong pfn)
    {
        lock (_lock)
        {
            if (!_exchanged.Remove(pfn, out var run)) return false;
            ulong count = 1UL << run.Order;
            for (ulong k = 0; k < count; k++)
            {
                _p2mOverride.Remove(pfn + k);
                _m2pOverride.Remove(run.Machine + k);
            }
            Array.Fill(_windowUsed, false, (int)(run.Machine - WindowStart), (int)count);
            Volatile.Write(ref _exchangedCount, _exchanged.Count);
            return true;
        }
    }

    // An invertible mix on [0, 2^bits): odd multiplies and xor-shifts, each undone by its own inverse.
    private ulong Scramble(ulong x)
    {
        x = (x * _a) & _mask;
        x ^= x >> _shift;
        x = (x * _b) & _mask;
        x ^= x >> _shift;
        return x;
    }

    private ulong Unscramble(ulong x)
    {
        x = UndoXorShift(x);
        x = (x * _bInv) & _mask;
        x = UndoXorShift(x);
        x = (x * _aInv) & _mask;
        return x;
    }

    private ulong UndoXorShift(ulong y)
    {
        ulong x = y;
        for (int s = _shift; s < _bits; s += _shift) x = y ^ (x >> _shift);
        return x & _mask;
    }

    // Newton's iteration for the inverse of an odd number modulo 2^64.
    private static ulong InverseOdd(ulong a)
    {
        ulong x = a;
        for (int i = 0; i < 6; i++) x *= 2 - a * x;
        return x;
    }
}
