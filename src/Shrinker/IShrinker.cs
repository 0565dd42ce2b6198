namespace PagePool.Shrinker;

/// <summary>
/// Something that holds memory it can give back under pressure, in the shape of the Linux shrinker API:
/// <see cref="Count"/> says how much could be freed (cheaply, racily), <see cref="Scan"/> frees some of it.
/// Register it with a <see cref="ShrinkerRegistry"/> so the reclaim thread calls it under pressure.
/// </summary>
public interface IShrinker
{
    /// <summary>
    /// What <see cref="Count"/> returns when the shrinker holds nothing at all (the kernel's SHRINK_EMPTY),
    /// as distinct from 0, which means "nothing can be freed right now" (busy, or not worth a scan).
    /// </summary>
    const long Empty = -1;

    /// <summary>A short name for logs and traces ("pagepool").</summary>
    string Name { get; }

    /// <summary>
    /// Objects (pages) that <see cref="Scan"/> could free now; an estimate, never blocking. <see cref="Empty"/>
    /// when there is nothing at all.
    /// </summary>
    long Count();

    /// <summary>Free at least <paramref name="toScan"/> objects when that many exist; returns how many were freed.</summary>
    long Scan(long toScan);
}
