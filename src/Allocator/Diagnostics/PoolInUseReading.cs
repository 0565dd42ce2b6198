namespace PagePool.Diagnostics;

/// <summary>Pages of one caching mode that callers of a pool hold now.</summary>
/// <param name="Caching">"wb", "wc" or "uc".</param>
/// <param name="Pages">The pages held.</param>
internal readonly record struct PoolInUseReading(string Caching, long Pages);
