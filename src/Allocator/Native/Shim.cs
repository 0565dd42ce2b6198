using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PagePool.Native;

/// <summary>Which cache-line flush instruction the CPU offers.</summary>
public enum FlushInstruction
{
    /// <summary>No flush instruction: caching changes cannot be emulated faithfully.</summary>
    None = 0,
    /// <summary>clflush: strongly ordered, one line at a time.</summary>
    Clflush = 1,
    /// <summary>clflushopt: weakly ordered, many lines in flight, ordered by a fence.</summary>
    Clflushopt = 2,
}

/// <summary>
/// The C shim (shim/ppshim.c) for the instructions .NET has no intrinsic for: clflush / clflushopt and the
/// fence that orders them. Built by the project's own build with gcc, statically linked into the AOT binary
/// and loaded as libppshim.so under the JIT.
/// </summary>
internal static unsafe partial class Shim
{
    private const string Library = "libppshim";

    /// <summary>The flush instruction the shim chose from CPUID.</summary>
    internal static FlushInstruction FlushKind => (FlushInstruction)pp_flush_kind();

    /// <summary>Flush every line of a range, no fence (batches fence once at the end).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void FlushNoFence(byte* p, nuint length) => pp_flush_range_nofence(p, length);

    /// <summary>Flush every line of a range between two fences: one page's caching change.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Flush(byte* p, nuint length) => pp_flush_range(p, length);

    /// <summary>mfence: orders flushes and non-temporal stores issued before it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Fence() => pp_fence();

    /// <summary>The CPU the calling thread runs on now (rseq cpu_id: exact after every migration).</summary>
    /// <remarks>
    /// The kernel rewrites the thread's rseq cpu_id on every migration, so once the thread knows where it lives
    /// the CPU is one load, inline: no call into the shim and no GC poll after it (~15 instructions on every pool
    /// hit, IOVA cache hit and bounce).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int CurrentCpu()
    {
        nint at = t_cpuIdAddress;
        int cpu;
        return at > 1 && (cpu = (int)Volatile.Read(ref *(uint*)at)) >= 0 ? cpu : CurrentCpuFirst();
    }

    // This thread's rseq cpu_id: 0 until looked up, 1 when rseq is not registered (then every call asks the shim,
    // which falls back to sched_getcpu, as it does when the area reads -1: unregistered since).
    [ThreadStatic] private static nint t_cpuIdAddress;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int CurrentCpuFirst()
    {
        if (t_cpuIdAddress == 0) t_cpuIdAddress = pp_cpu_id_address() is var a && a != 0 ? a : 1;
        return pp_current_cpu();
    }

    [LibraryImport(Library), SuppressGCTransition]
    private static partial nint pp_cpu_id_address();

    [LibraryImport(Library), SuppressGCTransition]
    private static partial int pp_current_cpu();

    [LibraryImport(Library), SuppressGCTransition]
    private static partial int pp_flush_kind();

    // A 4 KiB flush takes well under a microsecond; a 2 MiB run several hundred. The long form keeps the GC
    // transition so a stop-the-world never waits on it.
    [LibraryImport(Library)]
    private static partial void pp_flush_range_nofence(byte* p, nuint length);

    [LibraryImport(Library)]
    private static partial void pp_flush_range(byte* p, nuint length);

    [LibraryImport(Library), SuppressGCTransition]
    private static partial void pp_fence();
}
