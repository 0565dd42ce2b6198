// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>
/// What swapping does to the memory the kernel charges: RSS and the memory cgroup's usage. Runs with the RSS tests,
/// alone, so other tests' allocations do not blur the measurement.
/// </summary>
[Collection(nameof(RssTests))]
public sealed class SwapMemoryTests
{
    private const long Size = 96L << 20;

    // The cgroup is shared with every other process of the test run (test assemblies run in parallel, the CLI tests
    // start pagepool processes), which can move its usage by tens of MiB between two reads. A few attempts, keeping the
    // one least disturbed, separate the file store (about 96 MiB freed) from the memfd one (about nothing) reliably.
    private const int Attempts = 3;

    [Fact]
    public void The_file_store_lowers_rss_and_cgroup_usage_by_the_swapped_size()
    {
        long bestRss = 0, bestCgroup = long.MinValue;
        bool haveCgroup = false;
        for (int i = 0; i < Attempts && (bestRss < Size * 8 / 10 || (haveCgroup && bestCgroup < Size * 8 / 10)); i++)
        {
            var (rssDrop, cgroupDrop, _) = Measure(memfd: false);
            bestRss = Math.Max(bestRss, rssDrop);
            if (cgroupDrop is { } c) { haveCgroup = true; bestCgroup = Math.Max(bestCgroup, c); }
        }
        Assert.True(bestRss >= Size * 8 / 10, $"RSS fell by {bestRss >> 20} MiB after swapping {Size >> 20} MiB to a file");
        if (haveCgroup)
            Assert.True(bestCgroup >= Size * 8 / 10, $"memory.usage_in_bytes fell by {bestCgroup >> 20} MiB after swapping {Size >> 20} MiB to a file");
    }

    [Fact]
    public void The_memfd_store_frees_no_cgroup_memory()
    {
        long bestRss = 0, leastCgroupDrop = long.MaxValue, leastStore = long.MaxValue;
        bool haveCgroup = false;
        for (int i = 0; i < Attempts && (bestRss < Size * 8 / 10 || (haveCgroup && leastCgroupDrop >= Size / 4)); i++)
        {
            var (rssDrop, cgroupDrop, store) = Measure(memfd: true);
            bestRss = Math.Max(bestRss, rssDrop);
            leastStore = Math.Min(leastStore, store);
            if (cgroupDrop is { } c) { haveCgroup = true; leastCgroupDrop = Math.Min(leastCgroupDrop, c); }
        }
        // The pages leave the process's mappings (RSS falls) but stay in shmem: the store's memfd holds them, charged
        // to the same cgroup, whose usage does not fall the way the file store's does (>= 80 % of the size). Other
        // processes of the run move that usage by tens of MiB (page cache of their swap reads, pagepool children), so
        // the cgroup bound is half the size, well apart from both.
        Assert.True(bestRss >= Size * 8 / 10, $"RSS fell by {bestRss >> 20} MiB");
        Assert.True(leastStore >= Size, $"the memfd store holds {leastStore >> 20} MiB after swapping {Size >> 20} MiB");
        if (haveCgroup)
            Assert.True(leastCgroupDrop < Size / 2, $"memory.usage_in_bytes fell by {leastCgroupDrop >> 20} MiB with a memfd store; shmem should stay charged");
    }

    private static (long Rss, long? Cgroup, long Store) Measure(bool memfd)
    {
        using var f = new TtFixture(memfd, limitBytes: 256L << 20);
        using var t = f.New((int)(Size >> 12));
        t.Populate();
        TtFixture.Fill(t, 42);
        GC.Collect();
        long rss0 = SystemInfo.ResidentBytes();
        long? cg0 = CgroupUsage();
        t.SwapOut();
        long rss1 = SystemInfo.ResidentBytes();
        long? cg1 = CgroupUsage();
        long store = f.Store.AllocatedBytes;
        t.Populate(); // and back, so the swap was real
        return (rss0 - rss1, cg0 is { } a && cg1 is { } b ? a - b : null, store);
    }

    /// <summary>This process's cgroup v1 memory.usage_in_bytes, found from /proc/self/cgroup; null without one.</summary>
    internal static long? CgroupUsage()
    {
        foreach (var line in File.ReadLines("/proc/self/cgroup"))
        {
            var parts = line.Split(':', 3);
            if (parts.Length == 3 && parts[1].Split(',').Contains("memory"))
            {
                var path = $"/sys/fs/cgroup/memory{parts[2]}/memory.usage_in_bytes";
                if (File.Exists(path)) return long.Parse(File.ReadAllText(path).Trim());
            }
        }
        return null;
    }
}
