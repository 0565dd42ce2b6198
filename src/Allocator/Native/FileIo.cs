using System.Runtime.InteropServices;

namespace PagePool.Native;

/// <summary>
/// The file calls the swap store needs: open with O_DIRECT / O_TMPFILE, vectored positional I/O, fdatasync,
/// posix_fadvise, statfs, plus mremap for a buffer's stable CPU mapping. Same contract as <see cref="Libc"/>:
/// failures become <see cref="NativeCallException"/> naming the call; callers never see a raw -1.
/// </summary>
internal static unsafe partial class FileIo
{
    private const string C = "libc";

    internal const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_TRUNC = 0x200, O_DIRECT = 0x4000,
        O_CLOEXEC = 0x80000, O_TMPFILE = 0x400000 | 0x10000; // __O_TMPFILE | O_DIRECTORY
    internal const int POSIX_FADV_NORMAL = 0, POSIX_FADV_RANDOM = 1, POSIX_FADV_WILLNEED = 3, POSIX_FADV_DONTNEED = 4;
    internal const int MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2;
    /// <summary>Linux's IOV_MAX: the most iovecs one preadv/pwritev takes.</summary>
    internal const int IovMax = 1024;
    internal const long TmpfsMagic = 0x01021994;

    /// <summary>open(2); returns the descriptor.</summary>
    internal static int Open(string path, int flags, int mode = 0x180)
    {
        int fd = open(path, flags, mode);
        if (fd < 0)
            throw NativeCallException.FromErrno("open", $"path '{path}', flags 0x{flags:x}");
        return fd;
    }

    /// <summary>open(2) that reports the errno instead of throwing (to try O_DIRECT, then fall back).</summary>
    internal static int TryOpen(string path, int flags, out int errno, int mode = 0x180)
    {
        int fd = open(path, flags, mode);
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        return fd;
    }

    /// <summary>pwritev of the whole list at an offset; a short write continues, an error throws.</summary>
    internal static void PwritevExact(int fd, Span<IoVec> vectors, long offset) => Transfer(fd, vectors, offset, write: true);

    /// <summary>preadv of the whole list at an offset; end of file is an error.</summary>
    internal static void PreadvExact(int fd, Span<IoVec> vectors, long offset) => Transfer(fd, vectors, offset, write: false);

    private static void Transfer(int fd, Span<IoVec> vectors, long offset, bool write)
    {
        int first = 0;
        while (first < vectors.Length)
        {
            int count = Math.Min(IovMax, vectors.Length - first);
            nint n;
            fixed (IoVec* v = &vectors[first])
                n = write ? pwritev(fd, v, count, offset) : preadv(fd, v, count, offset);
            if (n < 0)
            {
                if (Marshal.GetLastPInvokeError() == Errno.EINTR) continue;
                throw NativeCallException.FromErrno(write ? "pwritev" : "preadv", $"fd {fd}, offset {offset}, {count} vectors");
            }
            if (n == 0)
                throw write
                    ? new NativeCallException("pwritev", Errno.ENOSPC, $"fd {fd}, offset {offset}: wrote nothing", Errno.Advice("pwritev", Errno.ENOSPC))
                    : new NativeCallException("preadv", 0, $"fd {fd}: end of file at offset {offset}",
                        "The file is shorter than the data expected in it; it was truncated by someone else.");
            offset += n;
            // Consume n bytes of the list: whole vectors, then a partial one (the kernel may stop anywhere).
            while (n > 0)
            {
                ref var v = ref vectors[first];
                if ((nuint)n >= v.Length) { n -= (nint)v.Length; v.Length = 0; first++; }
                else { v.Base += n; v.Length -= (nuint)n; n = 0; }
            }
            while (first < vectors.Length && vectors[first].Length == 0) first++;
        }
    }

    /// <summary>fdatasync; throws on failure (EIO here means data already written may be lost).</summary>
    internal static void Fdatasync(int fd)
    {
        if (fdatasync(fd) != 0)
            throw NativeCallException.FromErrno("fdatasync", $"fd {fd}");
    }

    /// <summary>posix_fadvise; returns the error number (it does not set errno), 0 on success.</summary>
    internal static int Fadvise(int fd, long offset, long length, int advice) => posix_fadvise(fd, offset, length, advice);

    /// <summary>The f_type of the file system holding an open file (fstatfs).</summary>
    internal static long FileSystemType(int fd)
    {
        // struct statfs on x86-64 is 120 bytes; f_type is its first field (a long).
        long* buf = stackalloc long[16];
        if (fstatfs(fd, buf) != 0)
            throw NativeCallException.FromErrno("fstatfs", $"fd {fd}");
        return buf[0];
    }

    /// <summary>
    /// Map the shared mapping at <paramref name="source"/> a second time at <paramref name="target"/> (mremap with
    /// old size 0 duplicates a shared mapping instead of moving it), replacing whatever was mapped there.
    /// </summary>
    internal static void DuplicateMapping(byte* source, byte* target, nuint length)
    {
        if (Faults.FaultInjector.ShouldFail(Faults.FaultPoint.Mremap))
            throw NativeCallException.Injected("mremap", Errno.ENOMEM, $"target 0x{(nuint)target:x}, length {length}");
        nint p = mremap(source, 0, length, MREMAP_MAYMOVE | MREMAP_FIXED, target);
        if (p == -1)
            throw NativeCallException.FromErrno("mremap", $"source 0x{(nuint)source:x}, target 0x{(nuint)target:x}, length {length}");
    }

    [LibraryImport(C, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] private static partial int open(string path, int flags, int mode);
    [LibraryImport(C, SetLastError = true)] private static partial nint pwritev(int fd, IoVec* iov, int count, long offset);
    [LibraryImport(C, SetLastError = true)] private static partial nint preadv(int fd, IoVec* iov, int count, long offset);
    [LibraryImport(C, SetLastError = true)] private static partial int fdatasync(int fd);
    [LibraryImport(C)] private static partial int posix_fadvise(int fd, long offset, long length, int advice);
    [LibraryImport(C, SetLastError = true)] private static partial int fstatfs(int fd, long* buf);
    [LibraryImport(C, SetLastError = true)] private static partial nint mremap(void* oldAddress, nuint oldSize, nuint newSize, int flags, void* newAddress);
}
