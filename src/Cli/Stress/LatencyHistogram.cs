namespace PagePool.Cli.Stress;

/// <summary>
/// Log-linear latency histogram (8 sub-buckets per power of two, about 9% resolution) in nanoseconds. One per
/// thread and operation, merged at the end, so recording is a few instructions and never shared.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 3, Sub = 1 << SubBits;
    private readonly long[] _buckets = new long[64 * Sub];

    internal long Count { get; private set; }
    internal long Max { get; private set; }

    internal void Record(long ns)
    {
        if (ns < 0) ns = 0;
        _buckets[Index(ns)]++;
        Count++;
        if (ns > Max) Max = ns;
    }

    internal void Merge(LatencyHistogram other)
    {
        for (int i = 0; i < _buckets.Length; i++) _buckets[i] += other._buckets[i];
        Count += other.Count;
        Max = Math.Max(Max, other.Max);
    }

    /// <summary>The upper bound of the bucket holding the q-quantile (0..1).</summary>
    internal long Percentile(double q)
    {
        if (Count == 0) return 0;
        long rank = (long)Math.Ceiling(q * Count), seen = 0;
        for (int i = 0; i < _buckets.Length; i++)
            if ((seen += _buckets[i]) >= rank) return Math.Min(UpperBound(i), Max);
        return Max;
    }

    private static int Index(long ns)
    {
        if (ns < Sub) return (int)ns;
        int msb = 63 - (int)long.LeadingZeroCount(ns);
        int sub = (int)(ns >> (msb - SubBits)) & (Sub - 1);
        return (msb - SubBits + 1) * Sub + sub;
    }

    private static long UpperBound(int index)
    {
        if (index < Sub) return index;
        int msb = index / Sub + SubBits - 1, sub = index % Sub;
        return ((long)(Sub + sub + 1) << (msb - SubBits)) - 1;
    }
}
