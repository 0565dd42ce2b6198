using PagePool.Shrinker;
using Xunit;

namespace PagePool.Shrinker.Tests;

public sealed class MemoryStatusTests
{
    private static long MemInfoKb(string key)
    {
        var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith(key + ":", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
    }

    [Fact]
    public void Total_memory_is_what_proc_meminfo_says()
        => Assert.Equal(MemInfoKb("MemTotal") * 1024, MemoryStatus.TotalBytes);

    [Fact]
    public void Available_memory_is_positive_and_below_the_total()
    {
        long? available = MemoryStatus.AvailableBytes;
        Assert.NotNull(available);
        Assert.InRange(available.Value, 1, MemoryStatus.TotalBytes!.Value);
    }

    [Fact]
    public void Psi_is_reported_available_exactly_when_the_kernel_file_exists()
    {
        Assert.Equal(File.Exists("/proc/pressure/memory"), MemoryStatus.PsiAvailable);
        if (MemoryStatus.PsiAvailable) Assert.InRange(MemoryStatus.PsiSomeAvg10!.Value, 0.0, 100.0);
    }

    [Fact]
    public void The_transparent_huge_page_mode_is_the_bracketed_choice()
    {
        var text = File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled");
        Assert.Contains($"[{MemoryStatus.TransparentHugePages}]", text);
    }

    [Fact]
    public void The_cgroup_version_matches_the_controller_in_proc_self_cgroup()
    {
        var lines = File.ReadAllLines("/proc/self/cgroup");
        bool v1 = lines.Any(l => l.Split(':')[1].Split(',').Contains("memory"));
        if (v1) Assert.Equal("v1", MemoryStatus.CgroupVersion);
        else if (MemoryStatus.CgroupVersion is { } v) Assert.Equal("v2", v);
    }

    [Fact]
    public void The_map_count_limit_is_the_sysctl_value()
        => Assert.Equal(long.Parse(File.ReadAllText("/proc/sys/vm/max_map_count").Trim()), MemoryStatus.MaxMapCount);
}
