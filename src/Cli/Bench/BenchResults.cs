using System.Text.Json;

namespace PagePool.Cli.Bench;

/// <summary>
/// A bench run as JSON. The object stays flat for tools that read one number per metric: every top-level number
/// member is a metric's median. Two object members ride along: <c>"samples"</c> (metric to every repetition,
/// what the gate tests) and <c>"units"</c> (metric to its unit). A reader of the flat form takes the number
/// members and skips the rest; a file without <c>"samples"</c> (an older bench) reads as one sample per metric.
/// A third, <c>"machine"</c>, says where it was measured (<see cref="BenchMachine"/>); an older file without it
/// reads as measured on an unknown machine.
/// </summary>
internal sealed class BenchResults
{
    internal const string SamplesMember = "samples";
    internal const string UnitsMember = "units";
    internal const string MachineMember = "machine";

    /// <summary>The largest file <see cref="Load"/> reads: a bench result is a few KiB; anything far larger is not one.</summary>
    internal const long MaxBytes = 64L << 20;

    /// <summary>Metric to median, in file order.</summary>
    internal IReadOnlyDictionary<string, double> Medians { get; }

    /// <summary>Metric to every repetition (at least one).</summary>
    internal IReadOnlyDictionary<string, double[]> Samples { get; }

    /// <summary>Where the run was measured, or null for a file that does not say.</summary>
    internal BenchMachine? Machine { get; }

    private BenchResults(Dictionary<string, double> medians, Dictionary<string, double[]> samples, BenchMachine? machine)
    {
        Medians = medians;
        Samples = samples;
        Machine = machine;
    }

    /// <summary>Write the metrics of a run measured on <paramref name="machine"/> to <paramref name="stream"/>.</summary>
    internal static void Write(IReadOnlyList<Metric> metrics, BenchMachine machine, Stream stream)
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        foreach (var m in metrics) w.WriteNumber(m.Name, Math.Round(m.Value, 3));
        w.WriteStartObject(MachineMember);
        if (machine.Cpu is null) w.WriteNull("cpu");
        else w.WriteString("cpu", machine.Cpu);
        w.WriteNumber("cpus", machine.Cpus);
        if (machine.Commit is null) w.WriteNull("commit");
        else w.WriteString("commit", machine.Commit);
        w.WriteEndObject();
        w.WriteStartObject(SamplesMember);
        foreach (var m in metrics)
        {
            w.WriteStartArray(m.Name);
            foreach (var v in m.Samples.Values) w.WriteNumberValue(Math.Round(v, 3));
            w.WriteEndArray();
        }
        w.WriteEndObject();
        w.WriteStartObject(UnitsMember);
        foreach (var m in metrics) w.WriteString(m.Name, m.Unit);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    /// <summary>Read a file written by <see cref="Write"/> (or the flat object alone).</summary>
    /// <exception cref="BenchResultsException">The file is missing, unreadable, or not a bench result.</exception>
    internal static BenchResults Load(string path)
    {
        if (!File.Exists(path)) throw new BenchResultsException($"the bench result '{path}' does not exist.");
        // A device (/dev/zero), pipe or huge file would be read without end: refuse it before reading a byte.
        if (!OutputFile.IsRegularFile(path))
            throw new BenchResultsException($"the bench result '{path}' is not a regular file (a device, pipe or socket).");
        byte[] bytes;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            if (stream.Length > MaxBytes) throw TooLarge(path);
            bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
            if (stream.ReadByte() >= 0) throw TooLarge(path); // it grew while being read
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new BenchResultsException($"cannot read the bench result '{path}': {e.Message}", e);
        }
        try
        {
            using var doc = JsonDocument.Parse(bytes);
            return Parse(doc.RootElement, path);
        }
        catch (JsonException e)
        {
            throw new BenchResultsException($"'{path}' is not JSON ({e.Message}); expected the output of 'pagepool bench --json'.", e);
        }
    }

    private static BenchResultsException TooLarge(string path)
        => new($"the bench result '{path}' is larger than {MaxBytes >> 20} MiB; a bench result is a few KiB.");

    private static BenchResults Parse(JsonElement root, string path)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw new BenchResultsException($"'{path}' holds a JSON {root.ValueKind.ToString().ToLowerInvariant()}, not the object 'pagepool bench --json' writes.");
        var medians = new Dictionary<string, double>();
        var samples = new Dictionary<string, double[]>();
        foreach (var p in root.EnumerateObject())
        {
            if (p.Value.ValueKind == JsonValueKind.Number) medians[p.Name] = p.Value.GetDouble();
            else if (p.Name == SamplesMember && p.Value.ValueKind == JsonValueKind.Object) continue;
            else if (p.Name == UnitsMember && p.Value.ValueKind == JsonValueKind.Object) continue;
            else if (p.Name == MachineMember && p.Value.ValueKind == JsonValueKind.Object) continue;
            else throw new BenchResultsException($"'{path}': member '{p.Name}' is a {p.Value.ValueKind.ToString().ToLowerInvariant()}; a metric must be a number.");
        }
        if (root.TryGetProperty(SamplesMember, out var all) && all.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in all.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Array || p.Value.GetArrayLength() == 0
                    || p.Value.EnumerateArray().Any(v => v.ValueKind != JsonValueKind.Number))
                    throw new BenchResultsException($"'{path}': samples of '{p.Name}' must be a non-empty array of numbers.");
                if (!medians.ContainsKey(p.Name))
                    throw new BenchResultsException($"'{path}': samples of '{p.Name}' have no median member of that name.");
                samples[p.Name] = p.Value.EnumerateArray().Select(v => v.GetDouble()).ToArray();
            }
        }
        foreach (var (name, median) in medians)
            samples.TryAdd(name, [median]);
        if (medians.Count == 0)
            throw new BenchResultsException($"'{path}' holds no metric; expected the output of 'pagepool bench --json'.");
        return new BenchResults(medians, samples, ParseMachine(root, path));
    }

    private static BenchMachine? ParseMachine(JsonElement root, string path)
    {
        if (!root.TryGetProperty(MachineMember, out var m)) return null;
        string? Text(string name) => m.TryGetProperty(name, out var v) ? v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Null => null,
            _ => throw new BenchResultsException($"'{path}': machine.{name} must be a string or null."),
        } : null;
        int cpus = 0;
        if (m.TryGetProperty("cpus", out var c) && (c.ValueKind != JsonValueKind.Number || !c.TryGetInt32(out cpus) || cpus < 1))
            throw new BenchResultsException($"'{path}': machine.cpus must be a whole number of at least 1.");
        return new BenchMachine(Text("cpu"), cpus, Text("commit"));
    }
}
