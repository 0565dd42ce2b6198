using System.IO.Pipelines;
using PagePool.Buffers;
using PagePool.Memory;
using PagePool.Pool;
using Xunit;

namespace PagePool.Allocator.Tests;

// Pipelines is the main consumer of MemoryPool<byte>: it rents a segment per write, returns it once read.
[Collection(nameof(RssTests))]
public sealed class PipeTests
{
    [Fact]
    public async Task A_pipe_over_the_page_pool_moves_256_MiB_with_every_byte_verified()
    {
        const long Total = 256L << 20;
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 0, NormalBytes = 128L << 20 });
        using var allocator = new PoolAllocator(memory);
        using var pool = new PageMemoryPool(allocator);
        // A pattern whose length is no power of two: a segment handed out twice or at a wrong offset shows.
        var pattern = new byte[(1 << 20) + 7];
        new Random(42).NextBytes(pattern);
        var pipe = new Pipe(new PipeOptions(pool: pool, pauseWriterThreshold: 1 << 20, resumeWriterThreshold: 512 << 10));

        var writer = Task.Run(async () =>
        {
            var rng = new Random(7);
            long written = 0;
            while (written < Total)
            {
                // Size hints from one page to half a megabyte: segments of several orders.
                var span = pipe.Writer.GetSpan(rng.Next(1, 512 << 10));
                int n = (int)Math.Min(span.Length, Total - written);
                Fill(span[..n], pattern, written);
                pipe.Writer.Advance(n);
                written += n;
                await pipe.Writer.FlushAsync(TestContext.Current.CancellationToken);
            }
            await pipe.Writer.CompleteAsync();
        }, TestContext.Current.CancellationToken);

        long read = 0, mismatches = 0;
        while (true)
        {
            var result = await pipe.Reader.ReadAsync(TestContext.Current.CancellationToken);
            foreach (var segment in result.Buffer)
            {
                if (!Matches(segment.Span, pattern, read)) mismatches++;
                read += segment.Length;
            }
            pipe.Reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted) break;
        }
        await pipe.Reader.CompleteAsync();
        await writer;

        Assert.Equal(Total, read);
        Assert.Equal(0, mismatches);
        long blocks = allocator.Statistics().Sum(s => s.Hits + s.Misses);
        Assert.True(blocks > 64, $"the pipe rented {blocks} blocks from the page pool");
        Assert.Equal(0, allocator.InUsePages(CachingMode.WriteBack)); // every segment went back
    }

    private static void Fill(Span<byte> destination, byte[] pattern, long position)
    {
        int at = (int)(position % pattern.Length);
        while (!destination.IsEmpty)
        {
            int n = Math.Min(destination.Length, pattern.Length - at);
            pattern.AsSpan(at, n).CopyTo(destination);
            destination = destination[n..];
            at = 0;
        }
    }

    private static bool Matches(ReadOnlySpan<byte> data, byte[] pattern, long position)
    {
        int at = (int)(position % pattern.Length);
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, pattern.Length - at);
            if (!data[..n].SequenceEqual(pattern.AsSpan(at, n))) return false;
            data = data[n..];
            at = 0;
        }
        return true;
    }
}
