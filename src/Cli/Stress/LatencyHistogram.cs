namespace PagePool.Cli.Stress;

/// <summary>
/// Log-linear latency histogram in nanoseconds, HdrHistogram's layout with 32 sub-buckets per power of two: values
/// below 32 ns are exact, above that a bucket is 1/32 of its power of two wide, so a percentile (reported as the
/// upper bound of its bucket, capped at the maximum seen) is at most 3.2% above the true value. Values above 2^40 ns
/// (18 minutes) share the last buckets. One per thread and operation, merged at the end: recording is a few
/// instructions and never shared.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 5, Sub = 1 << SubBits, MaxMsb = 40;

    /// <summary>What a reported percentile means, for the summary and the JSON.</summary>
    internal const string Resolution = "upper bound of a log-linear bucket 1/32 of its power of two wide: at most 3.2% above the true value (exact below 32 ns)";

    private readonly long[] _buckets = new long[(MaxMsb - SubBits + 2) * Sub];

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

    /// <summary>The upper bound of the bucket holding the q-quantile (0..1), at most <see cref="Max"/>.</summary>
    internal long Percentile(double q)
    {
        if (Count == 0) return 0;
        long rank = Math.Max(1, (long)Math.Ceiling(q * Count)), seen = 0;
        for (int i = 0; i < _buckets.Length; i++)
            if ((seen += _buckets[i]) >= rank) return Math.Min(UpperBound(i), Max);
        return Max;
    }

    internal static int Index(long ns)
    {
        if (ns < Sub) return (int)ns;
        int msb = Math.Min(63 - (int)long.LeadingZeroCount(ns), MaxMsb);
        int sub = (int)Math.Min(ns >> (msb - SubBits), 2 * Sub - 1) & (Sub - 1);
        if (63 - (int)long.LeadingZeroCount(ns) > MaxMsb) sub = Sub - 1;
        return (msb - SubBits + 1) * Sub + sub;
    }

    internal static long UpperBound(int index)
    {
        if (index < Sub) return index;
        int msb = index / Sub + SubBits - 1, sub = index % Sub;
        if (msb == MaxMsb && sub == Sub - 1) return long.MaxValue;
        return ((long)(Sub + sub + 1) << (msb - SubBits)) - 1;
    }
}
