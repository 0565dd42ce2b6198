using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace PagePool.Allocator.Tests;

/// <summary>
/// Work on a thread pinned to one CPU: the page pool's magazines, the IOVA caches and the swiotlb areas are picked by
/// the CPU a thread runs on, so a test about "this CPU" or "another CPU" has to say which.
/// </summary>
internal static partial class Pinned
{
    [LibraryImport("libc", SetLastError = true)]
    private static partial int sched_setaffinity(int pid, nint size, ref ulong mask);

    /// <summary>Run <paramref name="body"/> on a new thread pinned to <paramref name="cpu"/>; its exception is rethrown here.</summary>
    internal static void Run(int cpu, Action body, int stackBytes = 0)
    {
        Exception? error = null;
        var t = new Thread(() =>
        {
            ulong mask = 1UL << cpu;
            if (sched_setaffinity(0, sizeof(ulong), ref mask) != 0)
                error = new InvalidOperationException($"sched_setaffinity to CPU {cpu} failed (errno {Marshal.GetLastPInvokeError()})");
            else
                try { body(); } catch (Exception e) { error = e; }
        }, stackBytes);
        t.Start();
        t.Join();
        if (error is not null) ExceptionDispatchInfo.Capture(error).Throw();
    }
}
