using PagePool.Memory;

namespace PagePool.Cli.Stress;

/// <summary>A buffer a stress worker holds: its blocks, caching, and what its bytes must read back as.</summary>
internal sealed class LiveBuffer(PageHandle[] blocks, int count, int pages, CachingMode caching, ulong id)
{
    internal readonly PageHandle[] Blocks = blocks;
    internal readonly int Count = count;
    internal readonly int Pages = pages;
    internal CachingMode Caching = caching;
    /// <summary>Seeds the buffer's contents: every 8-byte word is a function of (Id, word index).</summary>
    internal readonly ulong Id = id;

    internal ReadOnlySpan<PageHandle> Handles => Blocks.AsSpan(0, Count);
}
