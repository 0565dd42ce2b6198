using System.Buffers;
using System.Runtime.InteropServices;
using PagePool.Buffers;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed unsafe class PageMemoryPoolTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 32L << 20, NormalBytes = 64L << 20 });
    private readonly PoolAllocator _allocator;
    private readonly PageMemoryPool _pool;

    public PageMemoryPoolTests()
    {
        _allocator = new PoolAllocator(_memory);
        _pool = new PageMemoryPool(_allocator);
    }

    public void Dispose()
    {
        _pool.Dispose();
        _allocator.Dispose();
        _memory.Dispose();
    }

    private static PageHandle BlockOf(IMemoryOwner<byte> owner) => ((PageBuffer)owner).Block;

    [Theory]
    [InlineData(-1, 4096)]
    [InlineData(0, 4096)]
    [InlineData(1, 4096)]
    [InlineData(4096, 4096)]
    [InlineData(4097, 8192)]
    [InlineData(12289, 16384)]
    [InlineData((1 << 20) + 1, 2 << 20)]
    [InlineData(2 << 20, 2 << 20)]
    public void Rent_rounds_up_to_one_block_of_the_smallest_order_that_holds_it(int minimumLength, int expected)
    {
        using var owner = _pool.Rent(minimumLength);
        Assert.Equal(expected, owner.Memory.Length);
        Assert.Equal(expected >> 12, BlockOf(owner).PageCount);
        Assert.Equal(expected >> 12, _allocator.InUsePages(CachingMode.WriteBack));
    }

    [Theory]
    [InlineData(-2)]
    [InlineData((2 << 20) + 1)]
    [InlineData(int.MaxValue)]
    [InlineData(int.MinValue)]
    public void Rent_outside_minus_one_to_MaxBufferSize_throws_and_takes_nothing(int minimumLength)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => _pool.Rent(minimumLength));
        Assert.Equal("minimumLength", e.ParamName);
        Assert.Equal(2 << 20, _pool.MaxBufferSize);
        Assert.Equal(0, _allocator.InUsePages(CachingMode.WriteBack));
    }

    [Fact]
    public void Memory_is_native_page_aligned_and_covers_the_blocks_view()
    {
        using var owner = _pool.Rent(20_000);
        var memory = owner.Memory;
        Assert.False(MemoryMarshal.TryGetArray<byte>(memory, out _)); // not a managed array
        Assert.True(MemoryMarshal.TryGetMemoryManager<byte, MemoryManager<byte>>(memory, out var manager));
        Assert.Same(owner, manager);
        fixed (byte* p = memory.Span)
        {
            Assert.Equal(0UL, (ulong)p % 4096);
            fixed (byte* view = _memory.GetSpan(BlockOf(owner)))
                Assert.Equal((ulong)view, (ulong)p);
        }
    }

    [Fact]
    public void Pin_hands_out_the_blocks_own_address_at_every_index()
    {
        using var owner = _pool.Rent(8192);
        var memory = owner.Memory;
        fixed (byte* p = memory.Span)
        {
            using (var h = memory.Pin()) Assert.Equal((ulong)p, (ulong)h.Pointer);
            using (var h = memory.Slice(100).Pin()) Assert.Equal((ulong)p + 100, (ulong)h.Pointer);
            using (var h = ((MemoryManager<byte>)owner).Pin(8192)) Assert.Equal((ulong)p + 8192, (ulong)h.Pointer); // one past the end, as arrays allow
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => ((MemoryManager<byte>)owner).Pin(8193));
        Assert.Throws<ArgumentOutOfRangeException>(() => ((MemoryManager<byte>)owner).Pin(-1));
    }

    [Fact]
    public void Writes_through_the_memory_are_the_blocks_contents()
    {
        using var owner = _pool.Rent(4096);
        owner.Memory.Span.Fill(0x5A);
        owner.Memory.Span[4095] = 0xA5;
        var copy = new byte[4096];
        _memory.Read(BlockOf(owner), 0, copy);
        Assert.Equal(0x5A, copy[0]);
        Assert.Equal(0xA5, copy[4095]);
    }

    [Fact]
    public void A_second_Dispose_is_harmless_and_the_block_goes_back_once()
    {
        var owner = _pool.Rent(4096);
        long pooled = _allocator.Count();
        owner.Dispose();
        owner.Dispose(); // a second release of the same handle would throw PageHandleException (double free)
        Assert.Equal(pooled + 1, _allocator.Count());
        Assert.Equal(0, _allocator.InUsePages(CachingMode.WriteBack));
        Assert.True(BlockOf(owner).IsNull);
    }

    [Fact]
    public void Use_after_Dispose_is_ObjectDisposedException_even_when_the_page_was_rented_again()
    {
        var owner = _pool.Rent(4096);
        var stale = owner.Memory;
        owner.Dispose();
        var all = new List<IMemoryOwner<byte>>();
        try
        {
            // Take the page back out, under whatever core this thread now runs on: some renter holds it again.
            for (int i = 0; i < 256; i++) all.Add(_pool.Rent(4096));
            Assert.Throws<ObjectDisposedException>(() => owner.Memory);
            Assert.Throws<ObjectDisposedException>(() => stale.Span.Length);
            Assert.Throws<ObjectDisposedException>(() => stale.Pin());
            Assert.Throws<ObjectDisposedException>(() => ((MemoryManager<byte>)owner).GetSpan().Length);
            Assert.Throws<ObjectDisposedException>(() => stale.ToArray());
        }
        finally
        {
            foreach (var o in all) o.Dispose();
        }
    }

    [Fact]
    public void Racing_Disposes_of_one_buffer_give_it_back_exactly_once()
    {
        int threads = Math.Max(4, 2 * Environment.ProcessorCount);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        for (int round = 0; round < 100; round++)
        {
            var owner = _pool.Rent(round % 2 == 0 ? 4096 : 65536);
            using var start = new Barrier(threads);
            var racers = Enumerable.Range(0, threads).Select(_ => new Thread(() =>
            {
                start.SignalAndWait();
                try { owner.Dispose(); }
                catch (Exception e) { errors.Enqueue(e); }
            })).ToArray();
            foreach (var t in racers) t.Start();
            foreach (var t in racers) t.Join();
        }
        Assert.Empty(errors);
        Assert.Equal(0, _allocator.InUsePages(CachingMode.WriteBack));
    }

    [Fact]
    public void Many_threads_renting_and_disposing_never_share_a_buffer()
    {
        int threads = 4 * Math.Max(2, Environment.ProcessorCount);
        const int OpsPerThread = 3000;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var workers = Enumerable.Range(1, threads).Select(t => new Thread(() =>
        {
            var rng = new Random(7919 * t);
            var held = new List<(IMemoryOwner<byte> Owner, byte Tag)>();
            for (int op = 0; op < OpsPerThread && failures.IsEmpty; op++)
            {
                if (held.Count > 0 && (held.Count >= 6 || rng.Next(2) == 0))
                {
                    int i = rng.Next(held.Count);
                    var (owner, tag) = held[i];
                    held.RemoveAt(i);
                    int at = owner.Memory.Span.IndexOfAnyExcept(tag);
                    if (at >= 0) failures.Enqueue($"thread {t}: byte {at} of a held buffer changed to {owner.Memory.Span[at]}, tag {tag}");
                    owner.Dispose();
                    try { _ = owner.Memory.Span.Length; failures.Enqueue($"thread {t}: a disposed buffer was still readable"); }
                    catch (ObjectDisposedException) { }
                }
                else
                {
                    int length = rng.Next(8) == 0 ? rng.Next(1, 256 << 10) : rng.Next(1, 9000);
                    var owner = _pool.Rent(length);
                    if (owner.Memory.Length < length) failures.Enqueue($"thread {t}: Rent({length}) gave {owner.Memory.Length} bytes");
                    byte tag = (byte)rng.Next(1, 256);
                    owner.Memory.Span.Fill(tag);
                    held.Add((owner, tag));
                }
            }
            foreach (var (owner, _) in held) owner.Dispose();
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        Assert.Empty(failures);
        Assert.Equal(0, _allocator.InUsePages(CachingMode.WriteBack));
        Assert.Equal(_allocator.Count(), _allocator.Audit());
    }

    [Fact]
    public void ClearBuffers_hands_out_buffers_that_read_zero()
    {
        using var clearing = new PageMemoryPool(_allocator, new PageMemoryPoolOptions { ClearBuffers = true });
        for (int i = 0; i < 64; i++)
        {
            var dirty = _pool.Rent(4096 << (i % 3));
            dirty.Memory.Span.Fill(0xEE);
            dirty.Dispose();
            using var clean = clearing.Rent(4096 << (i % 3));
            Assert.Equal(-1, clean.Memory.Span.IndexOfAnyExcept((byte)0));
        }
    }

    [Theory]
    [InlineData(CachingMode.WriteCombined, Zone.Normal)]
    [InlineData(CachingMode.Uncached, Zone.Dma32)]
    public void Caching_mode_and_zone_are_options_of_the_pool(CachingMode caching, Zone zone)
    {
        using var pool = new PageMemoryPool(_allocator, new PageMemoryPoolOptions { Caching = caching, Zone = zone });
        using (var owner = pool.Rent(3 * 4096))
        {
            Assert.Equal(caching, _memory.CachingOf(BlockOf(owner)));
            Assert.Equal(zone, _memory.ZoneOf(BlockOf(owner)));
            Assert.Equal(4, _allocator.InUsePages(caching));
        }
        Assert.Equal(0, _allocator.InUsePages(caching));
    }

    [Fact]
    public void Unknown_options_and_a_null_allocator_are_refused()
    {
        Assert.Throws<ArgumentNullException>(() => new PageMemoryPool(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PageMemoryPool(_allocator, new PageMemoryPoolOptions { Caching = (CachingMode)7 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PageMemoryPool(_allocator, new PageMemoryPoolOptions { Zone = (Zone)9 }));
    }

    [Fact]
    public void After_the_pool_is_disposed_Rent_throws_and_held_buffers_stay_valid_until_disposed()
    {
        var pool = new PageMemoryPool(_allocator);
        var held = pool.Rent(4096);
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Rent(4096));
        Assert.Throws<ObjectDisposedException>(() => pool.Rent(1 << 20));
        held.Memory.Span.Fill(1);
        held.Dispose();
        Assert.Equal(0, _allocator.InUsePages(CachingMode.WriteBack));
    }

    [Fact]
    public void A_buffer_used_after_its_memory_space_was_disposed_is_ObjectDisposedException_not_a_span_of_zeros()
    {
        var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 4L << 20, Dma32Bytes = 0, NormalBytes = 16L << 20 });
        var allocator = new PoolAllocator(memory);
        var pool = new PageMemoryPool(allocator);
        var held = pool.Rent(4096);
        var memoryBefore = held.Memory; // taken while the space was live
        held.Memory.Span.Fill(7);
        pool.Dispose();
        allocator.Dispose();
        memory.Dispose();
        Assert.Contains("memory space", Assert.Throws<ObjectDisposedException>(() => held.Memory).Message);
        Assert.Throws<ObjectDisposedException>(() => memoryBefore.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => memoryBefore.Pin());
        held.Dispose(); // still harmless
        held.Dispose();
    }

    [Fact]
    public void A_large_rent_with_no_contiguous_block_free_throws_and_gives_back_what_it_took()
    {
        // Two 2 MiB arenas with one page held in each: 1022 pages free, but no free 2 MiB block.
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 0, NormalBytes = 4L << 20 });
        using var allocator = new PoolAllocator(memory);
        using var pool = new PageMemoryPool(allocator);
        var first = memory.AllocateBlock(Zone.Normal, 9);
        var second = memory.AllocateBlock(Zone.Normal, 9);
        memory.FreeBlock(second);
        var inSecond = memory.AllocateBlock(Zone.Normal, 0);
        memory.FreeBlock(first);
        var inFirst = memory.AllocateBlock(Zone.Normal, 0);
        Assert.NotEqual(memory.FrameOf(inFirst) >> 9, memory.FrameOf(inSecond) >> 9);

        var e = Assert.Throws<InsufficientMemoryException>(() => pool.Rent(2 << 20));
        Assert.Contains("2048 KiB", e.Message);
        Assert.Equal(0, allocator.InUsePages(CachingMode.WriteBack));
        using var small = pool.Rent(1 << 20); // what it took went back to the pool and serves smaller rents
        Assert.Equal(1 << 20, small.Memory.Length);
    }
}
