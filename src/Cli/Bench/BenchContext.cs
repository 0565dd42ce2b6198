using System.Diagnostics;

namespace PagePool.Cli.Bench;

/// <summary>One measured number: a dotted name (group.what.unit), its value, and a line saying what it is.</summary>
internal sealed record Metric(string Name, double Value, string Description);

/// <summary>
/// What a benchmark group writes into. Every value is the median of several repetitions measured in this
/// process, side by side with the others, so ratios between metrics of one run are what to compare: absolute
/// numbers on a shared 2-core machine move from run to run.
/// </summary>
internal sealed class BenchContext(bool quick)
{
    private readonly List<Metric> _metrics = new();
    private readonly List<string> _notes = new();

    /// <summary>Fewer repetitions and smaller sizes, for CI.</summary>
    internal bool Quick { get; } = quick;

    /// <summary>Repetitions per metric (odd, so the median is a measured value).</summary>
    internal int Reps => Quick ? 5 : 11;

    internal IReadOnlyList<Metric> Metrics => _metrics;
    internal IReadOnlyList<string> Notes => _notes;

    internal void Add(string name, double value, string description) => _metrics.Add(new Metric(name, value, description));

    /// <summary>A metric that could not be measured on this machine, and why (printed, absent from the JSON).</summary>
    internal void Note(string note) => _notes.Add(note);

    /// <summary>The median of <see cref="Reps"/> runs of <paramref name="rep"/>, each returning its own measurement.</summary>
    internal double Median(Func<double> rep)
    {
        rep(); // warm-up: JIT, page faults, caches
        var values = new double[Reps];
        for (int i = 0; i < values.Length; i++) values[i] = rep();
        Array.Sort(values);
        return values[values.Length / 2];
    }

    /// <summary>Nanoseconds per operation of <paramref name="ops"/> runs of <paramref name="body"/>, timed as one block.</summary>
    internal static double NsPerOp(int ops, Action body)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < ops; i++) body();
        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / ops;
    }
}
