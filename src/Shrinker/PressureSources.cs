namespace PagePool.Shrinker;

/// <summary>Finds the pressure sources this machine offers.</summary>
public static class PressureSources
{
    /// <summary>
    /// Every pressure source this machine offers, opened for real: PSI (the memory cgroup's v2 memory.pressure
    /// where there is one, else /proc/pressure/memory), the memory cgroup when it has a limit, MemAvailable, and
    /// the GC. <paramref name="absent"/> receives one line per source that is not there and why. The caller
    /// owns (and disposes) what is returned.
    /// </summary>
    public static IReadOnlyList<PressureSource> Detect(ICollection<string>? absent = null)
    {
        var found = new List<PressureSource>();
        var cgroup = MemoryStatus.MemoryCgroup();

        string? psiPath = cgroup is (var dir, 2) && File.Exists(dir + "/memory.pressure") ? dir + "/memory.pressure"
            : File.Exists("/proc/pressure/memory") ? "/proc/pressure/memory" : null;
        if (psiPath is not null) found.Add(new PsiPressureSource(psiPath));
        else absent?.Add("psi: no /proc/pressure/memory (kernel without CONFIG_PSI, or psi=0)");

        if (cgroup is not var (cgDir, version))
            absent?.Add("cgroup: no memory controller for this process");
        else
        {
            var source = new CgroupPressureSource(cgDir, version);
            if (source.LimitBytes is null)
            {
                absent?.Add($"cgroup: {cgDir} (v{version}) sets no memory limit");
                source.Dispose();
            }
            else found.Add(source);
        }

        try { found.Add(new MemAvailablePressureSource()); }
        catch (ArgumentException e) { absent?.Add($"memavailable: {e.Message}"); }

        found.Add(new GcPressureSource());
        return found;
    }
}
