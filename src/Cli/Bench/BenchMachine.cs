using System.Reflection;

namespace PagePool.Cli.Bench;

/// <summary>
/// Where a bench result was measured: the CPU (vendor, family, model and name from /proc/cpuinfo), how many CPUs the
/// process could use, and the source commit of the binary that measured it. The gate's ratios (a metric over the
/// floor measured beside it) take out the machine's speed but not its kind: on one Intel Xeon the write-back hit
/// costs 2.3 clears of a page, on one AMD EPYC 1.4. So two results are compared only when their CPUs are the same;
/// for another CPU, CI builds the baseline's commit and measures it beside the current tree (.ci/run).
/// </summary>
/// <param name="Cpu">"vendor family F model M (name)", or null where /proc/cpuinfo does not say.</param>
/// <param name="Cpus">CPUs available to the process (0 where the file does not say).</param>
/// <param name="Commit">The git commit the binary was built from (the +sha of its informational version), or null.</param>
internal sealed record BenchMachine(string? Cpu, int Cpus, string? Commit)
{
    /// <summary>This process's machine and build.</summary>
    internal static BenchMachine Current { get; } = new(ReadCpu(), Environment.ProcessorCount, ReadCommit());

    /// <summary>
    /// Whether a ratio measured on <paramref name="other"/> can be compared with one measured here: the same CPU and
    /// the same number of CPUs. A result that does not say (an older bench file) is taken as comparable.
    /// </summary>
    internal bool ComparableWith(BenchMachine? other) =>
        other is null || Cpu is null || other.Cpu is null || (Cpu == other.Cpu && (Cpus == 0 || other.Cpus == 0 || Cpus == other.Cpus));

    /// <summary>"AuthenticAMD family 25 model 17 (AMD EPYC), 2 CPUs".</summary>
    public override string ToString() => $"{Cpu ?? "an unknown CPU"}, {Cpus} CPU{(Cpus == 1 ? "" : "s")}";

    private static string? ReadCpu()
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines("/proc/cpuinfo");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        string? Field(string name) => lines
            .Select(l => l.Split(':', 2))
            .Where(p => p.Length == 2 && p[0].Trim() == name)
            .Select(p => p[1].Trim())
            .FirstOrDefault();
        string? vendor = Field("vendor_id"), family = Field("cpu family"), model = Field("model"), modelName = Field("model name");
        if (vendor is null && modelName is null) return null;
        return $"{vendor ?? "unknown"} family {family ?? "?"} model {model ?? "?"} ({modelName ?? "unnamed"})";
    }

    // The SDK appends "+<commit sha>" to the informational version when it builds from a git checkout.
    private static string? ReadCommit()
    {
        string? version = typeof(BenchMachine).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        int plus = version?.IndexOf('+') ?? -1;
        if (plus < 0) return null;
        string sha = version![(plus + 1)..];
        return sha.Length == 40 && sha.All(Uri.IsHexDigit) ? sha : null;
    }
}
