using System.Runtime.InteropServices;
using PagePool.Faults;

namespace PagePool.Native;

/// <summary>
/// The libc calls PagePool makes, bound with LibraryImport (AOT friendly, no runtime marshalling stubs).
/// Every wrapper checks the result and turns errno into a <see cref="NativeCallException"/> that names the
/// call; callers never see a raw -1.
/// </summary>
internal static unsafe partial class Libc
{
    private const string C = "libc";

    internal const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2;
    internal const int MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
    internal const int MADV_HUGEPAGE = 14;
    internal const uint MFD_CLOEXEC = 1;
    internal const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;
    internal const int SC_PAGESIZE = 30, SC_NPROCESSORS_ONLN = 84, SC_PHYS_PAGES = 85;
    internal static readonly nint MAP_FAILED = -1;

    /// <summary>mmap; throws on MAP_FAILED.</summary>
    internal static byte* Mmap(void* addr, nuint length, int prot, int flags, int fd, long offset)
    {
        if (FaultInjector.ShouldFail(FaultPoint.Mmap))
            throw NativeCallException.Injected("mmap", Errno.ENOMEM, $"length {length}");
        nint p = mmap(addr, length, prot, flags, fd, offset);
        if (p == MAP_FAILED)
            throw NativeCallException.FromErrno("mmap", $"length {length}, prot {prot}, flags 0x{flags:x}, fd {fd}");
        return (byte*)p;
    }

    /// <summary>munmap; throws on failure.</summary>
    internal static void Munmap(void* addr, nuint length)
    {
        if (munmap(addr, length) != 0)
            throw NativeCallException.FromErrno("munmap", $"address 0x{(nuint)addr:x}, length {length}");
    }

    /// <summary>mprotect; throws on failure (ENOMEM here usually means vm.max_map_count was reached).</summary>
    internal static void Mprotect(void* addr, nuint length, int prot)
    {
        if (FaultInjector.ShouldFail(FaultPoint.Mprotect))
            throw NativeCallException.Injected("mprotect", Errno.ENOMEM, $"address 0x{(nuint)addr:x}, length {length}, prot {prot}");
        if (mprotect(addr, length, prot) != 0)
            throw NativeCallException.FromErrno("mprotect", $"address 0x{(nuint)addr:x}, length {length}, prot {prot}");
    }

    /// <summary>madvise that reports failure instead of throwing (for hints the kernel may refuse).</summary>
    internal static bool TryMadvise(void* addr, nuint length, int advice)
        => !FaultInjector.ShouldFail(FaultPoint.Madvise) && madvise(addr, length, advice) == 0;

    /// <summary>memfd_create; returns the descriptor.</summary>
    internal static int MemfdCreate(string name, uint flags)
    {
        if (FaultInjector.ShouldFail(FaultPoint.MemfdCreate))
            throw NativeCallException.Injected("memfd_create", Errno.EMFILE, $"name '{name}'");
        int fd = memfd_create(name, flags);
        if (fd < 0)
            throw NativeCallException.FromErrno("memfd_create", $"name '{name}'");
        return fd;
    }

    /// <summary>ftruncate; throws on failure.</summary>
    internal static void Ftruncate(int fd, long length)
    {
        if (FaultInjector.ShouldFail(FaultPoint.Ftruncate))
            throw NativeCallException.Injected("ftruncate", Errno.ENOSPC, $"fd {fd}, length {length}");
        if (ftruncate(fd, length) != 0)
            throw NativeCallException.FromErrno("ftruncate", $"fd {fd}, length {length}");
    }

    /// <summary>fallocate; throws on failure.</summary>
    internal static void Fallocate(int fd, int mode, long offset, long length)
    {
        if (FaultInjector.ShouldFail(FaultPoint.Fallocate))
            throw NativeCallException.Injected("fallocate", Errno.EIO, $"fd {fd}, mode {mode}, offset {offset}, length {length}");
        if (fallocate(fd, mode, offset, length) != 0)
            throw NativeCallException.FromErrno("fallocate", $"fd {fd}, mode {mode}, offset {offset}, length {length}");
    }

    /// <summary>close; throws on failure other than EINTR (the descriptor is gone either way on Linux).</summary>
    internal static void Close(int fd)
    {
        if (close(fd) != 0 && Marshal.GetLastPInvokeError() != Errno.EINTR)
            throw NativeCallException.FromErrno("close", $"fd {fd}");
    }

    /// <summary>sysconf; throws on failure.</summary>
    internal static long Sysconf(int name)
    {
        long v = sysconf(name);
        if (v < 0)
            throw NativeCallException.FromErrno("sysconf", $"name {name}");
        return v;
    }

    [LibraryImport(C, SetLastError = true)] private static partial nint mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);
    [LibraryImport(C, SetLastError = true)] private static partial int munmap(void* addr, nuint length);
    [LibraryImport(C, SetLastError = true)] private static partial int mprotect(void* addr, nuint length, int prot);
    [LibraryImport(C, SetLastError = true)] private static partial int madvise(void* addr, nuint length, int advice);
    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int memfd_create(string name, uint flags);
    [LibraryImport(C, SetLastError = true)] private static partial int ftruncate(int fd, long length);
    [LibraryImport(C, SetLastError = true)] private static partial int fallocate(int fd, int mode, long offset, long length);
    [LibraryImport(C, SetLastError = true)] private static partial int close(int fd);
    [LibraryImport(C, SetLastError = true)] private static partial long sysconf(int name);
}
