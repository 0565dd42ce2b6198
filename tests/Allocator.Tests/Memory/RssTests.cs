using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests;

// RSS is per process: run alone so other tests' allocations do not blur the measurement.
[CollectionDefinition(nameof(RssTests), DisableParallelization = true)]
public sealed class RssCollection;

[Collection(nameof(RssTests))]
public sealed class RssTests
{
    [Fact]
    public void Blocks_given_back_to_the_system_lower_rss()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 32L << 20, Dma32Bytes = 0, NormalBytes = 128L << 20 });
        var blocks = new PageHandle[48]; // 96 MiB over three arenas
        for (int i = 0; i < blocks.Length; i++)
        {
            blocks[i] = memory.AllocateBlock(Zone.Normal, 9);
            memory.GetSpan(blocks[i]).Fill(1);
        }
        long touched = SystemInfo.ResidentBytes();
        foreach (var b in blocks) memory.FreeBlock(b);
        long released = SystemInfo.ResidentBytes();
        Assert.True(touched - released >= 80L << 20, $"RSS fell by {(touched - released) >> 20} MiB, expected at least 80 MiB");
        Assert.Equal(32L << 20, memory.MappedBytes(Zone.Normal)); // one spare arena stays mapped
    }
}
