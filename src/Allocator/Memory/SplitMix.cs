namespace PagePool.Memory;

/// <summary>SplitMix64: a tiny seeded generator for deterministic layouts.</summary>
internal struct SplitMix(ulong seed)
{
    private ulong _state = seed;

    internal ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
