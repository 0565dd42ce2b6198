using System.Runtime.InteropServices;

namespace PagePool.Cli.Bench;

/// <summary>Pinning the calling thread to one CPU, for measurements that are only meaningful across CPUs.</summary>
internal static partial class CpuAffinity
{
    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static partial int SchedSetAffinity(int pid, nint size, ref ulong mask);

    /// <summary>
    /// Run the calling thread on CPU <paramref name="cpu"/> only (modulo the CPU count), or anywhere again for -1.
    /// Best effort: a refused pin leaves a measurement valid, if milder.
    /// </summary>
    internal static void PinTo(int cpu)
    {
        ulong mask = cpu < 0 ? ulong.MaxValue : 1UL << (cpu % Math.Min(64, Environment.ProcessorCount));
        SchedSetAffinity(0, sizeof(ulong), ref mask);
    }
}
