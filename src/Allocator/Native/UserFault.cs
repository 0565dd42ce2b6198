using System.Runtime.InteropServices;

namespace PagePool.Native;

/// <summary>
/// userfaultfd(2): the user-space form of a page-fault handler. A range registered in MISSING mode makes any access
/// to an absent page block its thread and queue a message; the handler maps the page and wakes the thread.
/// </summary>
internal static unsafe partial class UserFault
{
    private const long SYS_userfaultfd = 323;
    private const ulong UFFD_API = 0xAA;
    private const uint UFFDIO_API = 0xc018aa3f, UFFDIO_REGISTER = 0xc020aa00, UFFDIO_WAKE = 0x8010aa02;
    private const ulong UFFDIO_REGISTER_MODE_MISSING = 1;
    internal const byte UFFD_EVENT_PAGEFAULT = 0x12;
    private const int O_CLOEXEC = 0x80000, O_NONBLOCK = 0x800;
    private const short POLLIN = 1;

    /// <summary>Open a userfaultfd and agree on the API; -1 and the errno when the kernel refuses.</summary>
    internal static int TryOpen(out int errno)
    {
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return -1;
        }
        ulong* api = stackalloc ulong[3];
        api[0] = UFFD_API;
        api[1] = 0;
        api[2] = 0;
        if (ioctl(fd, UFFDIO_API, api) != 0)
        {
            errno = Marshal.GetLastPInvokeError();
            Libc.Close(fd);
            return -1;
        }
        errno = 0;
        return fd;
    }

    /// <summary>Register a range for missing-page faults.</summary>
    internal static void Register(int fd, byte* start, nuint length)
    {
        ulong* r = stackalloc ulong[4];
        r[0] = (ulong)start;
        r[1] = length;
        r[2] = UFFDIO_REGISTER_MODE_MISSING;
        r[3] = 0;
        if (ioctl(fd, UFFDIO_REGISTER, r) != 0)
            throw NativeCallException.FromErrno("ioctl(UFFDIO_REGISTER)", $"start 0x{(nuint)start:x}, length {length}");
    }

    /// <summary>Wake the threads waiting on faults in a range (after the handler mapped it).</summary>
    internal static void Wake(int fd, byte* start, nuint length)
    {
        ulong* r = stackalloc ulong[2];
        r[0] = (ulong)start;
        r[1] = length;
        if (ioctl(fd, UFFDIO_WAKE, r) != 0)
            throw NativeCallException.FromErrno("ioctl(UFFDIO_WAKE)", $"start 0x{(nuint)start:x}, length {length}");
    }

    /// <summary>Wait up to <paramref name="timeoutMs"/> for a message; the faulting address, or 0 when none came.</summary>
    internal static ulong NextFault(int fd, int timeoutMs)
    {
        long* pfd = stackalloc long[1];
        ((int*)pfd)[0] = fd;
        ((short*)pfd)[2] = POLLIN;
        ((short*)pfd)[3] = 0;
        if (poll(pfd, 1, timeoutMs) <= 0) return 0;
        byte* msg = stackalloc byte[32];
        nint n = read(fd, msg, 32);
        if (n != 32 || msg[0] != UFFD_EVENT_PAGEFAULT) return 0;
        return *(ulong*)(msg + 16);
    }

    [LibraryImport("libc", SetLastError = true)] private static partial long syscall(long number, int flags);
    [LibraryImport("libc", SetLastError = true)] private static partial int ioctl(int fd, uint request, void* arg);
    [LibraryImport("libc", SetLastError = true)] private static partial int poll(void* fds, ulong count, int timeout);
    [LibraryImport("libc", SetLastError = true)] private static partial nint read(int fd, void* buffer, nuint count);
}
