namespace PagePool.Memory;

/// <summary>
/// The cached linear-map alias of a write-combined or uncached page was used: the double mapping Linux forbids
/// (a cached and an uncached mapping of one page at once, which some CPUs cannot keep coherent).
/// </summary>
// The dma_alloc_coherent double mapping of shared/seeds/003.
public sealed class DoubleMappingException : PagePoolException
{
    /// <summary>The page whose alias was touched.</summary>
    public PageHandle Handle { get; }

    /// <summary>The page's caching mode at the time.</summary>
    public CachingMode Caching { get; }

    internal DoubleMappingException(PageHandle handle, CachingMode caching)
        : base($"Cached alias of a {caching} page used: {handle}. While a page is write-combined or uncached its " +
               "linear-map alias is unmapped; access it through its view, or set it back to WriteBack first.")
    {
        Handle = handle;
        Caching = caching;
    }
}
