using System.Diagnostics;

namespace PagePool.Cli.Bench;

/// <summary>
/// What a benchmark group writes into. Every metric keeps all its repetitions, measured in this process side by
/// side with the others, so ratios between metrics of one run are what to compare: absolute numbers on a shared
/// 2-core machine move from run to run. The median is what the table shows; the gate tests the samples.
/// </summary>
internal sealed class BenchContext(bool quick, int? repeat = null, BenchSlowdown? slowdown = null)
{
    private readonly List<Metric> _metrics = new();
    private readonly List<string> _notes = new();

    /// <summary>Fewer repetitions and smaller sizes, for CI.</summary>
    internal bool Quick { get; } = quick;

    /// <summary>Repetitions per metric: --repeat, or 5 (quick) and 11 (full), odd so the median is a measured value.</summary>
    internal int Reps { get; } = repeat ?? (quick ? 5 : 11);

    /// <summary>The deliberate slowdown asked for in the environment (none normally).</summary>
    internal BenchSlowdown Slowdown { get; } = slowdown ?? BenchSlowdown.None;

    internal IReadOnlyList<Metric> Metrics => _metrics;
    internal IReadOnlyList<string> Notes => _notes;

    /// <summary>A metric with all its repetitions.</summary>
    internal void Add(string name, Samples samples, string description) => _metrics.Add(new Metric(name, samples, description));

    /// <summary>A metric measured once, or computed from others (one sample: the gate cannot test it, only show it).</summary>
    internal void Add(string name, double value, string description) => Add(name, new Samples([value]), description);

    /// <summary>A metric that could not be measured on this machine, and why (printed, absent from the JSON).</summary>
    internal void Note(string note) => _notes.Add(note);

    /// <summary><see cref="Reps"/> runs of <paramref name="rep"/> after one warm-up run, each returning its own measurement.</summary>
    internal Samples Median(Func<double> rep)
    {
        rep(); // warm-up: JIT, page faults, caches
        var values = new double[Reps];
        for (int i = 0; i < values.Length; i++) values[i] = rep();
        return new Samples(values);
    }

    /// <summary>
    /// Each repetition is timed in this many blocks and counts its fastest: on a machine shared with other work a
    /// block that lost the CPU to another process says nothing about the code, and the gate compares repetitions.
    /// </summary>
    internal const int BlocksPerRep = 4;

    /// <summary>
    /// Nanoseconds per operation of <paramref name="ops"/> runs of <paramref name="body"/> for the metric named,
    /// repeated, each repetition the fastest of <see cref="BlocksPerRep"/> blocks of ops / BlocksPerRep runs. The
    /// operation goes through <see cref="Slowdown"/> (a no-op unless asked for in the environment).
    /// </summary>
    internal Samples NsPerOp(string metric, int ops, Action body)
    {
        var op = Slowdown.Wrap(metric, body);
        int block = Math.Max(1, ops / BlocksPerRep);
        return Median(() =>
        {
            double fastest = double.MaxValue;
            for (int i = 0; i < BlocksPerRep; i++) fastest = Math.Min(fastest, NsPerOp(block, op));
            return fastest;
        });
    }

    /// <summary>Nanoseconds per operation of <paramref name="ops"/> runs of <paramref name="body"/>, timed as one block.</summary>
    internal static double NsPerOp(int ops, Action body)
    {
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < ops; i++) body();
        return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / ops;
    }
}
