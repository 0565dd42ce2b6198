using System.Runtime.InteropServices;

namespace PagePool.Shrinker.Native;

/// <summary>
/// The few libc calls the pressure sources make: open/read/write/close on kernel files, poll(2) for PSI
/// triggers (POLLPRI) and eventfd(2) for cgroup v1 thresholds and for waking the reclaim thread. This assembly
/// knows nothing of the allocator, so it binds its own calls. Wrappers return -1 and leave errno in
/// <see cref="Marshal.GetLastPInvokeError"/>; callers decide whether a failure is a fallback or an error.
/// </summary>
internal static unsafe partial class Libc
{
    private const string C = "libc";

    internal const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000;
    internal const short POLLIN = 0x1, POLLPRI = 0x2, POLLERR = 0x8, POLLHUP = 0x10, POLLNVAL = 0x20;
    internal const int EFD_CLOEXEC = 0x80000, EFD_NONBLOCK = 0x800;
    internal const int EINTR = 4, EAGAIN = 11;

    [StructLayout(LayoutKind.Sequential)]
    internal struct PollFd
    {
        internal int Fd;
        internal short Events;
        internal short Revents;
    }

    [LibraryImport(C, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial int Open(string path, int flags);

    [LibraryImport(C, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    [LibraryImport(C, EntryPoint = "write", SetLastError = true)]
    internal static partial nint Write(int fd, byte* buffer, nuint count);

    [LibraryImport(C, EntryPoint = "read", SetLastError = true)]
    internal static partial nint Read(int fd, byte* buffer, nuint count);

    [LibraryImport(C, EntryPoint = "poll", SetLastError = true)]
    internal static partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    [LibraryImport(C, EntryPoint = "fstatfs", SetLastError = true)]
    private static partial int FStatFs(int fd, byte* buffer);

    internal const long PROC_SUPER_MAGIC = 0x9fa0, CGROUP2_SUPER_MAGIC = 0x63677270;

    /// <summary>The filesystem magic (statfs f_type) of an open file; 0 when fstatfs fails.</summary>
    internal static long FileSystemType(int fd)
    {
        byte* buffer = stackalloc byte[256]; // struct statfs is 120 bytes on x86_64 and arm64; f_type comes first
        return FStatFs(fd, buffer) == 0 ? *(long*)buffer : 0;
    }

    [LibraryImport(C, EntryPoint = "eventfd", SetLastError = true)]
    internal static partial int EventFd(uint initial, int flags);

    /// <summary>Write a whole string (UTF-8, with its terminating NUL when asked); errno on failure.</summary>
    internal static bool WriteString(int fd, string text, bool nul, out int errno)
    {
        int n = System.Text.Encoding.UTF8.GetByteCount(text);
        Span<byte> bytes = stackalloc byte[n + 1];
        System.Text.Encoding.UTF8.GetBytes(text, bytes);
        bytes[n] = 0;
        fixed (byte* p = bytes)
        {
            nint written = Write(fd, p, (nuint)(nul ? n + 1 : n));
            errno = written < 0 ? Marshal.GetLastPInvokeError() : 0;
            return written >= 0;
        }
    }

    /// <summary>Add one to an eventfd counter (wakes a poller).</summary>
    internal static void Signal(int eventFd)
    {
        ulong one = 1;
        Write(eventFd, (byte*)&one, 8);
    }

    /// <summary>Read and reset an eventfd counter; 0 when nothing was signalled (non-blocking fd).</summary>
    internal static ulong Drain(int eventFd)
    {
        ulong value = 0;
        return Read(eventFd, (byte*)&value, 8) == 8 ? value : 0;
    }

    /// <summary>The name of an errno for messages ("EACCES (13)").</summary>
    internal static string ErrnoName(int errno) => errno switch
    {
        1 => "EPERM (1)",
        2 => "ENOENT (2)",
        9 => "EBADF (9)",
        13 => "EACCES (13)",
        22 => "EINVAL (22)",
        30 => "EROFS (30)",
        95 => "EOPNOTSUPP (95)",
        _ => $"errno {errno}",
    };
}
