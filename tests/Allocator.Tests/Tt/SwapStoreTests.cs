// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using System.Runtime.InteropServices;
using PagePool.Native;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>What the stores do with freed space, and the chunked read behind a prefault of its destination.</summary>
public sealed unsafe class SwapStoreTests
{
    private const long Mib = 1L << 20;

    [Fact]
    public void The_file_store_keeps_freed_space_allocated_for_the_next_swap_out()
    {
        using var f = new TtFixture(store: new FileSwapStore(Path.GetTempPath(), keptFreeBytes: 16 * Mib));
        using var t = f.New((int)(8 * Mib / 4096));
        t.Populate();
        ulong sum = TtFixture.Fill(t, 3);
        t.SwapOut();
        t.Populate();
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(8 * Mib, f.Store.AllocatedBytes); // ext4 and tmpfs count exactly the written blocks
        t.SwapOut(); // over the same blocks
        Assert.Equal(8 * Mib, f.Store.AllocatedBytes);
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void The_file_store_punches_freed_space_beyond_what_it_keeps()
    {
        using var f = new TtFixture(store: new FileSwapStore(Path.GetTempPath(), keptFreeBytes: 4 * Mib));
        using var t = f.New((int)(8 * Mib / 4096));
        t.Populate();
        t.SwapOut();
        Assert.Equal(8 * Mib, f.Store.AllocatedBytes);
        t.Populate();
        Assert.Equal(0, f.Store.AllocatedBytes);
    }

    [Fact]
    public void The_memfd_store_punches_freed_space_at_once()
    {
        using var f = new TtFixture(memfd: true);
        using var t = f.New((int)(8 * Mib / 4096));
        t.Populate();
        t.SwapOut();
        Assert.Equal(8 * Mib, f.Store.AllocatedBytes);
        t.Populate();
        Assert.Equal(0, f.Store.AllocatedBytes);
    }

    [Fact]
    public void A_restore_read_in_prefaulted_chunks_is_bit_exact()
    {
        // 40 MiB in one restore batch: twenty 2 MiB chunks, faulted in by helper threads, read in order behind them.
        using var f = new TtFixture(restoreBatch: 64 * Mib);
        using var t = f.New((int)(40 * Mib / 4096));
        f.AssertSwapRoundTrip(t, 11);
    }

    [Fact]
    public void A_chunked_read_that_fails_part_way_is_a_typed_error_and_the_chunks_before_it_arrived()
    {
        // A 20 MiB file read as 32 MiB: the chunks past its end fail with end of file.
        string path = Path.Combine(Path.GetTempPath(), $"pagepool-store-test-{Environment.ProcessId}-{Guid.NewGuid():N}");
        var pattern = TtFixture.Pattern(20 * Mib, 5);
        File.WriteAllBytes(path, pattern);
        byte* buffer = (byte*)NativeMemory.AlignedAlloc((nuint)(32 * Mib), 4096);
        try
        {
            using var store = FileSwapStore.OverExisting(path);
            var vectors = new IoVec[16];
            for (int i = 0; i < vectors.Length; i++) vectors[i] = new IoVec { Base = buffer + i * 2 * Mib, Length = (nuint)(2 * Mib) };
            var e = Assert.Throws<SwapStoreException>(() => store.Read(0, vectors, 32 * Mib));
            Assert.Contains("end of file", e.Message);
            Assert.True(new ReadOnlySpan<byte>(buffer, (int)(16 * Mib)).SequenceEqual(pattern.AsSpan(0, (int)(16 * Mib))),
                "the two chunks wholly inside the file must have been read");
            Assert.Equal(0, store.BytesRead); // a failed read counts nothing
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
            File.Delete(path);
        }
    }
}
