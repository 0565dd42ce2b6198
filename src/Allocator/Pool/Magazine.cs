using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace PagePool.Pool;

/// <summary>
/// A fixed-size stack of block handles: the unit the per-core caches and the depot trade in (the shape of
/// Linux's iova_magazine and of DPDK's mempool cache). A magazine is owned by exactly one party at a time
/// (a core slot's holder, or the depot), so its fields need no atomics.
/// </summary>
internal sealed class Magazine(int capacity, int id)
{
    // Room past the last handle so two magazines' arrays never share the line their tops are written on.
    internal readonly ulong[] Handles = new ulong[capacity + CacheLine.Ulongs];
    internal readonly int Capacity = capacity;
    internal int Count;
    private CacheLine _pad; // keeps Count of neighbouring magazines on separate lines

    /// <summary>Registry id (1-based); names the magazine in the depot's tagged stack head.</summary>
    internal readonly int Id = id;

    /// <summary>The id of the magazine below this one in a depot stack (0 = bottom). Written only while pushing.</summary>
    internal int NextId;

    /// <summary>Pop the top handle; false when empty. Only the magazine's owner calls this.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryPop(out ulong handle)
    {
        int n = Count - 1;
        if (n < 0) { handle = 0; return false; }
        handle = Handles[n];
        Count = n;
        return true;
    }

    /// <summary>Push a handle; false when full. Only the magazine's owner calls this.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryPush(ulong handle)
    {
        int n = Count;
        Debug.Assert(handle != 0, "the null handle is never pooled");
        if (n >= Capacity) return false;
        Handles[n] = handle;
        Count = n + 1;
        return true;
    }
}
