namespace PagePool.Shrinker;

/// <summary>
/// What the kernel says about memory right now: /proc/meminfo totals, PSI memory pressure and the cgroup
/// memory limit (v2 memory.max or v1 memory.limit_in_bytes). Every reader tolerates a missing file: a field
/// the machine does not offer is null, never a guess.
/// </summary>
public static class MemoryStatus
{
    private const string PsiPath = "/proc/pressure/memory";

    /// <summary>MemTotal from /proc/meminfo, in bytes.</summary>
    public static long? TotalBytes => MemInfo("MemTotal:");

    /// <summary>MemAvailable from /proc/meminfo, in bytes: what the kernel could hand out without swapping.</summary>
    public static long? AvailableBytes => MemInfo("MemAvailable:");

    /// <summary>True when the kernel exposes PSI for memory (/proc/pressure/memory is readable).</summary>
    public static bool PsiAvailable => TryRead(PsiPath) is not null;

    /// <summary>The PSI "some" 10-second average, in percent of wall time stalled on memory; null without PSI.</summary>
    public static double? PsiSomeAvg10
    {
        get
        {
            var text = TryRead(PsiPath);
            if (text is null) return null;
            foreach (var line in text.Split('\n'))
            {
                if (!line.StartsWith("some ", StringComparison.Ordinal)) continue;
                foreach (var item in line.Split(' '))
                    if (item.StartsWith("avg10=", StringComparison.Ordinal)
                        && double.TryParse(item.AsSpan(6), System.Globalization.CultureInfo.InvariantCulture, out double v))
                        return v;
            }
            return null;
        }
    }

    /// <summary>Which cgroup memory controller governs this process: "v2", "v1" or null.</summary>
    public static string? CgroupVersion => CgroupLimitFile() switch
    {
        null => null,
        var p when p.EndsWith("memory.max", StringComparison.Ordinal) => "v2",
        _ => "v1",
    };

    /// <summary>
    /// The cgroup memory limit in bytes; null when there is no controller or no limit ("max" in v2, the
    /// page-rounded LONG_MAX that v1 reports for "unlimited").
    /// </summary>
    public static long? CgroupLimitBytes
    {
        get
        {
            var path = CgroupLimitFile();
            var text = path is null ? null : TryRead(path)?.Trim();
            if (text is null || text == "max" || !long.TryParse(text, out long v)) return null;
            return v >= long.MaxValue / 2 ? null : v;
        }
    }

    /// <summary>The transparent huge page mode for anonymous memory ("always", "madvise" or "never").</summary>
    public static string? TransparentHugePages => Selected("/sys/kernel/mm/transparent_hugepage/enabled");

    /// <summary>The transparent huge page mode for shmem and memfd memory.</summary>
    public static string? ShmemHugePages => Selected("/sys/kernel/mm/transparent_hugepage/shmem_enabled");

    /// <summary>vm.max_map_count: how many mappings one process may have (caching changes split mappings).</summary>
    public static long? MaxMapCount => long.TryParse(TryRead("/proc/sys/vm/max_map_count")?.Trim(), out long v) ? v : null;

    private static string? CgroupLimitFile() => MemoryCgroup() switch
    {
        null => null,
        (var dir, 1) => dir + "/memory.limit_in_bytes",
        (var dir, _) => dir + "/memory.max",
    };

    /// <summary>
    /// The directory of this process's memory cgroup and its version (1 or 2), from /proc/self/cgroup; null when
    /// no memory controller is mounted where it is expected.
    /// </summary>
    internal static (string Directory, int Version)? MemoryCgroup(string procSelfCgroup = "/proc/self/cgroup", string root = "/sys/fs/cgroup")
    {
        var cgroup = TryRead(procSelfCgroup);
        if (cgroup is null) return null;
        foreach (var line in cgroup.Split('\n'))
        {
            var parts = line.Split(':', 3);
            if (parts.Length != 3) continue;
            string path = parts[2] == "/" ? "" : parts[2];
            if (parts[1].Split(',').Contains("memory"))
                foreach (var dir in new[] { root + "/memory" + path, root + "/memory" })
                    if (File.Exists(dir + "/memory.limit_in_bytes")) return (dir, 1);
            if (parts[0] == "0" && parts[1].Length == 0)
                foreach (var dir in new[] { root + path, root + "/unified" + path })
                    if (File.Exists(dir + "/memory.max")) return (dir, 2);
        }
        return null;
    }

    // "always [madvise] never" -> "madvise"
    private static string? Selected(string path)
    {
        var text = TryRead(path);
        int a = text?.IndexOf('[') ?? -1, b = text?.IndexOf(']') ?? -1;
        return a >= 0 && b > a ? text![(a + 1)..b] : null;
    }

    private static long? MemInfo(string key) => MeminfoField(TryRead("/proc/meminfo"), key);

    /// <summary>A "Key: N kB" field of /proc/meminfo text, in bytes; null when absent or unreadable.</summary>
    internal static long? MeminfoField(string? text, string key)
    {
        if (text is null) return null;
        foreach (var line in text.Split('\n'))
            if (line.StartsWith(key, StringComparison.Ordinal))
            {
                var f = line[key.Length..].Trim().Split(' ');
                return long.TryParse(f[0], out long kb) ? kb * 1024 : null;
            }
        return null;
    }

    private static string? TryRead(string path)
    {
        try { return File.ReadAllText(path); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
