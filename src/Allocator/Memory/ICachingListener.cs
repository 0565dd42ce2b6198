namespace PagePool.Memory;

/// <summary>
/// An owner of blocks (a pool) that wants to know when a caller changes the caching of a block it handed out,
/// so its per-mode accounting follows the page. Called on the slow path of <see cref="PhysicalMemory.SetCaching(ReadOnlySpan{PageHandle}, CachingMode)"/>.
/// </summary>
internal interface ICachingListener
{
    void OnCachingChanged(CachingMode from, CachingMode to, int pages);
}
