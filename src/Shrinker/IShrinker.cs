namespace PagePool.Shrinker;

/// <summary>
/// Something that holds memory it can give back under pressure, in the shape of the Linux shrinker API:
/// <see cref="Count"/> says how much could be freed (cheaply, racily), <see cref="Scan"/> frees some of it.
/// </summary>
public interface IShrinker
{
    /// <summary>A short name for logs and traces ("pagepool").</summary>
    string Name { get; }

    /// <summary>Objects (pages) that <see cref="Scan"/> could free now; an estimate, never blocking.</summary>
    long Count();

    /// <summary>Free at least <paramref name="toScan"/> objects when that many exist; returns how many were freed.</summary>
    long Scan(long toScan);
}
