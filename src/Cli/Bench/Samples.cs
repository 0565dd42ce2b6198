namespace PagePool.Cli.Bench;

/// <summary>
/// The repetitions of one measurement, sorted, and their median. Converts to its median where a plain number is
/// wanted, and scales (<c>/ 1000</c> for ns to us) without losing the samples, so the gate sees every repetition.
/// </summary>
internal readonly struct Samples
{
    private readonly double[] _sorted;

    internal Samples(IEnumerable<double> values)
    {
        _sorted = values.ToArray();
        if (_sorted.Length == 0) throw new ArgumentException("A measurement needs at least one sample.", nameof(values));
        Array.Sort(_sorted);
    }

    /// <summary>Every repetition, smallest first.</summary>
    internal IReadOnlyList<double> Values => _sorted;

    /// <summary>The middle sample (the mean of the two middle ones for an even count).</summary>
    internal double Median => _sorted.Length % 2 == 1
        ? _sorted[_sorted.Length / 2]
        : (_sorted[_sorted.Length / 2 - 1] + _sorted[_sorted.Length / 2]) / 2;

    internal double Min => _sorted[0];
    internal double Max => _sorted[^1];

    public static implicit operator double(Samples s) => s.Median;

    public static Samples operator /(Samples s, double divisor) => new(s._sorted.Select(v => v / divisor));

    public static Samples operator *(Samples s, double factor) => new(s._sorted.Select(v => v * factor));
}
