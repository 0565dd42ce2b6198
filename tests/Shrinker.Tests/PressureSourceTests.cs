using Xunit;

namespace PagePool.Shrinker.Tests;

public sealed class PressureSourceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pagepool-pressure-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static string Psi(double avg10) =>
        $"some avg10={avg10.ToString(System.Globalization.CultureInfo.InvariantCulture)} avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    [Fact]
    public void Psi_on_a_plain_file_falls_back_to_the_averages_and_says_so()
    {
        using var psi = new PsiPressureSource(Write("memory.pressure", Psi(0)));
        Assert.False(psi.TriggerRegistered);
        Assert.Contains("not a PSI file", psi.Mode);
        Assert.Equal(-1, psi.WaitFd);
    }

    [Fact]
    public void Psi_on_a_missing_file_falls_back_and_names_the_error()
    {
        using var psi = new PsiPressureSource(Path.Combine(_dir, "absent"));
        Assert.False(psi.TriggerRegistered);
        Assert.Contains("ENOENT", psi.Mode);
        Assert.Equal(MemoryPressure.None, psi.Sample());
    }

    [Fact]
    public void Psi_averages_map_to_levels_with_hysteresis()
    {
        string path = Write("memory.pressure", Psi(0.2));
        using var psi = new PsiPressureSource(path);
        Assert.Equal(MemoryPressure.None, psi.Sample());
        File.WriteAllText(path, Psi(2));
        Assert.Equal(MemoryPressure.Low, psi.Sample());
        File.WriteAllText(path, Psi(0.7)); // below the entry threshold, above the exit one: still Low
        Assert.Equal(MemoryPressure.Low, psi.Sample());
        File.WriteAllText(path, Psi(0.3));
        Assert.Equal(MemoryPressure.None, psi.Sample());
        File.WriteAllText(path, Psi(15));
        Assert.Equal(MemoryPressure.Medium, psi.Sample());
        File.WriteAllText(path, Psi(55));
        Assert.Equal(MemoryPressure.Critical, psi.Sample());
    }

    [Fact]
    public void Psi_trigger_is_registered_for_real_where_the_kernel_allows_it()
    {
        if (!File.Exists("/proc/pressure/memory"))
        {
            Console.WriteLine("skipped: this kernel has no /proc/pressure/memory");
            return;
        }
        using var psi = new PsiPressureSource();
        if (!psi.TriggerRegistered && psi.Mode.Contains("refused", StringComparison.Ordinal))
        {
            Console.WriteLine($"skipped: {psi.Mode}");
            return;
        }
        Assert.True(psi.TriggerRegistered, psi.Mode);
        Assert.True(psi.WaitFd >= 0);
        Assert.Contains("POLLPRI", psi.Mode);
    }

    [Fact]
    public void Cgroup_v1_usage_against_limit_maps_to_levels_with_hysteresis()
    {
        Write("memory.limit_in_bytes", "1000000\n");
        string usage = Write("memory.usage_in_bytes", "500000\n");
        Write("cgroup.event_control", "");
        using var cg = new CgroupPressureSource(_dir, 1);
        Assert.Equal(1_000_000, cg.LimitBytes);
        Assert.Equal(MemoryPressure.None, cg.Sample());
        File.WriteAllText(usage, "760000");
        Assert.Equal(MemoryPressure.Low, cg.Sample());
        File.WriteAllText(usage, "720000");
        Assert.Equal(MemoryPressure.Low, cg.Sample()); // hysteresis: stays until below 70 %
        File.WriteAllText(usage, "690000");
        Assert.Equal(MemoryPressure.None, cg.Sample());
        File.WriteAllText(usage, "810000");
        Assert.Equal(MemoryPressure.Medium, cg.Sample());
        File.WriteAllText(usage, "860000");
        Assert.Equal(MemoryPressure.Critical, cg.Sample());
    }

    [Fact]
    public void Cgroup_v1_registers_its_usage_threshold_through_event_control()
    {
        Write("memory.limit_in_bytes", "1000000\n");
        Write("memory.usage_in_bytes", "1\n");
        string control = Write("cgroup.event_control", "");
        using var cg = new CgroupPressureSource(_dir, 1);
        Assert.True(cg.ThresholdRegistered, cg.Mode);
        var fields = File.ReadAllText(control).Split(' ');
        Assert.Equal(cg.WaitFd.ToString(System.Globalization.CultureInfo.InvariantCulture), fields[0]);
        Assert.Equal("700000", fields[2]); // 70 % of the limit (LowLeave)
    }

    [Fact]
    public void Cgroup_v1_without_a_limit_reports_no_pressure_and_registers_no_threshold()
    {
        Write("memory.limit_in_bytes", "9223372036854771712\n");
        Write("memory.usage_in_bytes", "123456789\n");
        using var cg = new CgroupPressureSource(_dir, 1);
        Assert.Null(cg.LimitBytes);
        Assert.False(cg.ThresholdRegistered);
        Assert.Equal(MemoryPressure.None, cg.Sample());
    }

    [Fact]
    public void Cgroup_v2_uses_the_lower_of_high_and_max()
    {
        Write("memory.max", "max\n");
        string high = Write("memory.high", "2000000\n");
        string current = Write("memory.current", "1650000\n");
        using var cg = new CgroupPressureSource(_dir, 2);
        Assert.Equal(2_000_000, cg.LimitBytes);
        Assert.Equal(MemoryPressure.Medium, cg.Sample());
        File.WriteAllText(high, "max");
        Assert.Null(cg.LimitBytes);
        Assert.Equal(MemoryPressure.None, cg.Sample());
        File.WriteAllText(current, "1");
    }

    [Fact]
    public void A_directory_without_cgroup_files_is_refused()
        => Assert.Throws<ArgumentException>(() => new CgroupPressureSource(_dir, 2));

    [Fact]
    public void MemAvailable_below_the_watermark_is_pressure_with_hysteresis()
    {
        static string MemInfo(long availableKb) => $"MemTotal:       16000000 kB\nMemFree:         100 kB\nMemAvailable:   {availableKb} kB\n";
        string path = Write("meminfo", MemInfo(2_000_000));
        var source = new MemAvailablePressureSource(path, watermarkBytes: 1_000_000L * 1024);
        Assert.Equal(MemoryPressure.None, source.Sample());
        File.WriteAllText(path, MemInfo(900_000));
        Assert.Equal(MemoryPressure.Medium, source.Sample());
        File.WriteAllText(path, MemInfo(1_100_000)); // above the watermark, below 1.25 x: still Low
        Assert.Equal(MemoryPressure.Low, source.Sample());
        File.WriteAllText(path, MemInfo(1_300_000));
        Assert.Equal(MemoryPressure.None, source.Sample());
        File.WriteAllText(path, MemInfo(400_000));
        Assert.Equal(MemoryPressure.Critical, source.Sample());
    }

    [Fact]
    public void MemAvailable_default_watermark_is_5_percent_of_total()
    {
        string path = Write("meminfo", "MemTotal:       16000000 kB\nMemAvailable:   9000000 kB\n");
        Assert.Equal(16_000_000L * 1024 / 20, new MemAvailablePressureSource(path).WatermarkBytes);
        Assert.Throws<ArgumentException>(() => new MemAvailablePressureSource(Write("bad", "MemTotal: 1 kB\n")));
    }

    [Fact]
    public void Gc_load_is_read_after_each_gen2_and_stands_between_them()
    {
        var gc = (Gen2: 1, Load: 50L, High: 90L, Total: 100L);
        var source = new GcPressureSource(() => gc);
        Assert.Equal(MemoryPressure.None, source.Sample());
        gc = (2, 92, 90, 100);
        Assert.Equal(MemoryPressure.Medium, source.Sample());
        gc = (2, 10, 90, 100); // no new gen 2: what was seen after the last one stands
        Assert.Equal(MemoryPressure.Medium, source.Sample());
        gc = (3, 98, 90, 100);
        Assert.Equal(MemoryPressure.Critical, source.Sample());
        gc = (4, 10, 90, 100);
        Assert.Equal(MemoryPressure.None, source.Sample());
    }

    [Fact]
    public void The_memory_cgroup_is_found_from_proc_self_cgroup()
    {
        string root = Path.Combine(_dir, "fs");
        Directory.CreateDirectory(Path.Combine(root, "memory", "job", "a"));
        File.WriteAllText(Path.Combine(root, "memory", "job", "a", "memory.limit_in_bytes"), "100");
        string cgroup = Write("cgroup", "5:cpu:/\n4:memory:/job/a\n0::/\n");
        Assert.Equal((Path.Combine(root, "memory") + "/job/a", 1), MemoryStatus.MemoryCgroup(cgroup, root));
        Directory.CreateDirectory(Path.Combine(root, "svc"));
        File.WriteAllText(Path.Combine(root, "svc", "memory.max"), "max");
        Assert.Equal((root + "/svc", 2), MemoryStatus.MemoryCgroup(Write("cgroup2", "0::/svc\n"), root));
    }

    [Fact]
    public void Detect_opens_the_sources_this_machine_has_and_names_the_missing()
    {
        var absent = new List<string>();
        var sources = PressureSources.Detect(absent);
        try
        {
            Assert.Contains(sources, s => s.Name == "gc");
            Assert.Equal(File.Exists("/proc/pressure/memory"), sources.Any(s => s.Name == "psi"));
            Assert.Equal(sources.Any(s => s.Name == "cgroup"), !absent.Any(a => a.StartsWith("cgroup", StringComparison.Ordinal)));
            Assert.All(sources, s => Assert.False(string.IsNullOrEmpty(s.Mode)));
        }
        finally
        {
            foreach (var s in sources) s.Dispose();
        }
    }
}
