namespace PagePool.Native;

/// <summary>Linux x86-64 errno values PagePool names in its errors.</summary>
internal static class Errno
{
    internal const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, EBADF = 9, EAGAIN = 11, ENOMEM = 12, EACCES = 13,
        EFAULT = 14, EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, ENFILE = 23, EMFILE = 24, EFBIG = 27,
        ENOSPC = 28, ESPIPE = 29, EOVERFLOW = 75, EOPNOTSUPP = 95;

    /// <summary>The symbolic name of an errno value ("ENOMEM"), or "errno N" for one not listed.</summary>
    internal static string Name(int errno) => errno switch
    {
        EPERM => "EPERM", ENOENT => "ENOENT", EINTR => "EINTR", EIO => "EIO", EBADF => "EBADF",
        EAGAIN => "EAGAIN", ENOMEM => "ENOMEM", EACCES => "EACCES", EFAULT => "EFAULT", EBUSY => "EBUSY",
        EEXIST => "EEXIST", ENODEV => "ENODEV", EINVAL => "EINVAL", ENFILE => "ENFILE", EMFILE => "EMFILE",
        EFBIG => "EFBIG", ENOSPC => "ENOSPC", ESPIPE => "ESPIPE", EOVERFLOW => "EOVERFLOW",
        EOPNOTSUPP => "EOPNOTSUPP", _ => $"errno {errno}",
    };

    /// <summary>A sentence a user can act on, for an errno from a given call.</summary>
    internal static string Advice(string operation, int errno) => (operation, errno) switch
    {
        ("mprotect", ENOMEM) or ("mmap", ENOMEM) when MapCountNear() =>
            "The process has reached vm.max_map_count mappings; lower the pool limit, keep fewer pages in " +
            "write-combined or uncached state, or raise the limit with 'sysctl vm.max_map_count=N'.",
        ("mmap", ENOMEM) => "The address space or memory is exhausted, or the length is impossible; ask for less.",
        ("mprotect", ENOMEM) => "The range is not mapped, or the kernel could not split the mapping; check the address.",
        (_, EINVAL) => "An argument is invalid (a length of zero, an unaligned address or an unknown flag).",
        (_, EMFILE) or (_, ENFILE) => "The file descriptor limit is reached; raise 'ulimit -n' or free descriptors.",
        (_, ENOSPC) or (_, EFBIG) => "The memory file system is full or the size too large; free memory or ask for less.",
        (_, EACCES) or (_, EPERM) => "The kernel refused the permission; check seccomp, sysctls and capabilities.",
        (_, EBADF) => "The descriptor is closed or not of the right kind; this is a bug in the caller.",
        (_, EOPNOTSUPP) => "The kernel or file system does not support this operation.",
        _ => "See the man page of the call for what this errno means.",
    };

    // vm.max_map_count is the usual reason mprotect fails with ENOMEM on a mapping PagePool owns.
    private static bool MapCountNear()
    {
        try
        {
            int max = int.Parse(File.ReadAllText("/proc/sys/vm/max_map_count").Trim());
            int count = File.ReadLines("/proc/self/maps").Count();
            return count >= max - 64;
        }
        catch (IOException) { return false; }
        catch (FormatException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }
}
