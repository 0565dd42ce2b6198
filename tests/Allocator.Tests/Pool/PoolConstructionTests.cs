using System.Reflection;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

// Counts the process's live pool ids, so it runs alone (no other test creates or disposes pools meanwhile).
[Collection(nameof(RssTests))]
public sealed class PoolConstructionTests
{
    private static int LiveIds()
        => ((bool[])typeof(PoolAllocator).GetField("s_liveIds", BindingFlags.NonPublic | BindingFlags.Static)!.GetValue(null)!).Count(live => live);

    [Fact]
    public void A_pool_over_a_disposed_memory_space_is_refused_and_keeps_no_pool_id()
    {
        // Each refused construction took an id and kept it: after 65,535 of them no pool could be made at all.
        var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 16L << 20, NormalBytes = 16L << 20 });
        memory.Dispose();
        int before = LiveIds();
        for (int i = 0; i < 100; i++)
            Assert.Throws<ObjectDisposedException>(() => new PoolAllocator(memory));
        Assert.Equal(before, LiveIds());
    }
}
