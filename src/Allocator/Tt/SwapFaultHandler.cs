using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// The process's userfaultfd and the thread that serves it: TTM's fault handler (ttm_bo_vm_fault populates a buffer
/// whose pages are absent) in user space. A thread touching an absent page of a buffer's CPU mapping blocks in the
/// kernel; this thread populates the buffer (restoring it from the swap store), which maps its pages into the range,
/// and wakes the thread, whose access then completes.
/// </summary>
/// <remarks>
/// Where the kernel refuses userfaultfd, <see cref="Available"/> is false and <see cref="RefusedReason"/> says why:
/// absent pages are then inaccessible, and the owner calls <see cref="PageArray.Populate"/> before using the pointer.
/// A reservation does not hold the buffer's internal lock, so a thread may touch the mapping of a buffer it reserved.
/// </remarks>
internal static unsafe class SwapFaultHandler
{
    private static readonly Lock s_lock = new();
    private static readonly List<PageArray> s_arrays = new();
    private static readonly int s_fd = Open(out s_refused);
    private static readonly string? s_refused;
    private static Thread? s_thread;
    private static long s_faults;

    internal static bool Available => s_fd >= 0;

    internal static string? RefusedReason => s_refused;

    internal static long Faults => Volatile.Read(ref s_faults);

    private static int Open(out string? refused)
    {
        int fd = UserFault.TryOpen(out int errno);
        refused = fd < 0 ? $"userfaultfd refused with {Errno.Name(errno)}" : null;
        return fd;
    }

    /// <summary>Serve faults in the range of this array from now on.</summary>
    internal static void Add(PageArray array)
    {
        lock (s_lock)
        {
            s_arrays.Add(array);
            if (s_thread is null && Available)
            {
                s_thread = new Thread(Serve) { IsBackground = true, Name = "pagepool-fault" };
                s_thread.Start();
            }
        }
    }

    internal static void Remove(PageArray array)
    {
        lock (s_lock) s_arrays.Remove(array);
    }

    internal static void Watch(byte* start, nuint length) => UserFault.Register(s_fd, start, length);

    private static void Serve()
    {
        while (true)
        {
            ulong address = UserFault.NextFault(s_fd, 1000);
            if (address == 0) continue;
            PageArray? owner = null;
            lock (s_lock)
                foreach (var a in s_arrays)
                    if (a.MappingContains(address)) { owner = a; break; }
            if (owner is null) continue; // the array went away while the fault was queued: its range is unmapped
            Interlocked.Increment(ref s_faults);
            // Populate until it works: the faulting thread cannot proceed until its page is there.
            while (!owner.FaultIn())
                Thread.Sleep(10);
            // Wake every thread waiting anywhere in the buffer: its whole range is mapped now.
            var (start, length) = owner.MappingRange;
            UserFault.Wake(s_fd, (byte*)start, length);
        }
    }
}
