using PagePool.Native;

namespace PagePool;

/// <summary>Facts about the machine PagePool sizes itself by.</summary>
public static class SystemInfo
{
    /// <summary>The kernel's page size in bytes (sysconf _SC_PAGESIZE).</summary>
    public static long PageSize { get; } = Libc.Sysconf(Libc.SC_PAGESIZE);

    /// <summary>Physical RAM in bytes (sysconf _SC_PHYS_PAGES x page size).</summary>
    public static long PhysicalMemoryBytes { get; } = Libc.Sysconf(Libc.SC_PHYS_PAGES) * Libc.Sysconf(Libc.SC_PAGESIZE);

    /// <summary>Online CPUs.</summary>
    public static int OnlineCpus { get; } = (int)Libc.Sysconf(Libc.SC_NPROCESSORS_ONLN);

    /// <summary>The flush instruction caching changes use.</summary>
    public static FlushInstruction FlushInstruction => Shim.FlushKind;

    /// <summary>This process's resident set in bytes, from /proc/self/statm (what the kernel charges it).</summary>
    public static long ResidentBytes()
    {
        Span<byte> buf = stackalloc byte[128];
        using var f = File.OpenHandle("/proc/self/statm");
        int n = RandomAccess.Read(f, buf, 0);
        var text = System.Text.Encoding.ASCII.GetString(buf[..n]);
        var fields = text.Split(' ');
        return long.Parse(fields[1]) * PageSize;
    }
}
