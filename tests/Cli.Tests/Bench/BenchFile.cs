using System.Text.Json;

namespace PagePool.Cli.Tests;

/// <summary>Writes bench results in the format of 'pagepool bench --json' from chosen samples, for gate tests.</summary>
internal sealed class BenchFile : IDisposable
{
    internal string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"pagepool-gate-{Guid.NewGuid():N}.json");

    /// <param name="cpu">The machine.cpu the file names (none when null: an older bench file).</param>
    internal BenchFile(IReadOnlyDictionary<string, double[]> samples, string? cpu = null, int cpus = 2)
    {
        using var stream = File.Create(Path);
        using var w = new Utf8JsonWriter(stream);
        w.WriteStartObject();
        foreach (var (name, values) in samples) w.WriteNumber(name, values.Order().ElementAt(values.Length / 2));
        w.WriteStartObject("samples");
        foreach (var (name, values) in samples)
        {
            w.WriteStartArray(name);
            foreach (var v in values) w.WriteNumberValue(v);
            w.WriteEndArray();
        }
        w.WriteEndObject();
        if (cpu is not null)
        {
            w.WriteStartObject("machine");
            w.WriteString("cpu", cpu);
            w.WriteNumber("cpus", cpus);
            w.WriteString("commit", "0123456789abcdef0123456789abcdef01234567");
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    internal BenchFile(string text) => File.WriteAllText(Path, text);

    /// <summary>Seven samples around <paramref name="median"/>, spread +-5% by a seeded generator.</summary>
    internal static double[] Around(double median, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, 7).Select(_ => median * (0.95 + 0.1 * random.NextDouble())).ToArray();
    }

    public void Dispose() => File.Delete(Path);
}
