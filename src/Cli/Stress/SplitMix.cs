namespace PagePool.Cli.Stress;

/// <summary>
/// SplitMix64 (Steele, Lea, Flood 2014): the stress tool's seeded generator and the mixer behind its verification
/// pattern. The library keeps its own copy for the Xen frame scramble; the tool needs the same few lines and must
/// not reach into the library's internals for them.
/// </summary>
internal struct SplitMix(ulong seed)
{
    internal const ulong Golden = 0x9E3779B97F4A7C15UL;

    private ulong _state = seed;

    internal ulong Next() => Mix(_state += Golden);

    /// <summary>The SplitMix64 finaliser: a bijection of 64-bit words that scatters every input bit.</summary>
    internal static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
