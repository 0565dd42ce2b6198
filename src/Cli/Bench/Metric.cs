namespace PagePool.Cli.Bench;

/// <summary>
/// One measured number: a dotted name (group.what.unit), every repetition, and a line saying what it is. The
/// value shown and written as the flat JSON member is the median of the repetitions.
/// </summary>
internal sealed record Metric(string Name, Samples Samples, string Description)
{
    internal double Value => Samples.Median;

    internal string Unit => MetricUnit.Of(Name);
}
