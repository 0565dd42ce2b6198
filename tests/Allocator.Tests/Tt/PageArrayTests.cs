// Populate takes a token as its interruption point (what some tests exercise); plain calls are short and synchronous.
#pragma warning disable xUnit1051

using PagePool.Memory;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>A device for tests: reaches addresses up to its limit, hands out DMA address = physical + offset.</summary>
internal sealed class TestDevice(string name, ulong limit) : ITtBindTarget
{
    internal const ulong Offset = 1UL << 40;
    internal int Bound;
    public string Name => name;
    public ulong AddressLimit => limit;
    public void Bind(ReadOnlySpan<ulong> physical, Span<ulong> dma)
    {
        for (int i = 0; i < physical.Length; i++) dma[i] = physical[i] + Offset;
        Bound += physical.Length;
    }
    public void Unbind(ReadOnlySpan<ulong> dma) => Bound -= dma.Length;
}

public sealed class PageArrayTests
{
    [Fact]
    public void Populate_gives_pages_and_unpopulate_gives_them_back()
    {
        using var f = new TtFixture();
        using var t = f.New(100, CachingMode.WriteCombined, flags: TtFlags.ZeroAlloc);
        Assert.Equal(TtState.Unpopulated, t.State);
        t.Populate();
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(100, f.Accounting.Pages);
        Assert.Equal(100, f.Pool.InUsePages(CachingMode.WriteCombined));
        var bytes = new byte[t.Bytes];
        t.Read(0, bytes);
        Assert.True(bytes.All(b => b == 0), "ZeroAlloc pages must read zero");
        t.Unpopulate();
        Assert.Equal(TtState.Unpopulated, t.State);
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.PoolInUse);
    }

    [Theory]
    [InlineData(false, CachingMode.WriteBack)]
    [InlineData(false, CachingMode.Uncached)]
    [InlineData(true, CachingMode.WriteCombined)]
    public void Swap_out_and_in_is_bit_exact_and_frees_the_pages(bool memfd, CachingMode caching)
    {
        using var f = new TtFixture(memfd);
        using var t = f.New(1000, caching);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 7);
        Assert.Equal(1000, t.SwapOut());
        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(0, t.ResidentPages);
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.PoolInUse);
        Assert.Equal(1000L * 4096, f.Store.BytesInUse);
        t.Populate();
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(1000L * 4096, f.Accounting.BytesSwappedOut);
        Assert.Equal(1000L * 4096, f.Accounting.BytesSwappedIn);
    }

    [Fact]
    public void File_store_bypasses_the_page_cache_with_O_DIRECT_on_this_disk()
    {
        using var f = new TtFixture();
        Assert.True(f.Store.ReleasesMemory, f.Store.Description);
        Assert.Contains("O_DIRECT", f.Store.Description);
    }

    [Fact]
    public void Partial_backup_keeps_the_rest_resident_and_populate_restores_the_part()
    {
        using var f = new TtFixture();
        using var t = f.New(1024 + 64); // blocks of 512, 512, 64
        t.Populate();
        ulong sum = TtFixture.Fill(t, 11);
        Assert.Equal(576, t.SwapOut(600)); // whole blocks that fit: 512 and 64, not the second 512
        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(576, t.SwappedPages);
        Assert.Equal(512, t.ResidentPages);
        Assert.Equal(512, f.Accounting.Pages);
        Assert.Equal(512, t.SwapOut()); // a second backup takes the rest
        Assert.Equal(1088, t.SwappedPages);
        t.Populate();
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(1088, f.Accounting.Pages);
    }

    [Fact]
    public void A_restore_interrupted_by_a_failing_read_keeps_what_it_read_and_the_next_populate_resumes()
    {
        using var f = new TtFixture(restoreBatch: 2L << 20); // one 512-page block per read
        using var t = f.New(2048);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 3);
        t.SwapOut();
        long inUse = f.PoolInUse;
        f.Store.Faults.FailReads(1);
        Assert.Throws<SwapStoreException>(() => t.Populate());
        Assert.Equal(TtState.SwappedOut, t.State);
        Assert.Equal(2048, t.SwappedPages); // the first batch failed: nothing restored, nothing leaked
        Assert.Equal(inUse, f.PoolInUse);
        Assert.Equal(0, f.Accounting.Pages);

        f.Store.Faults.FailReads(1, after: 2);
        Assert.Throws<SwapStoreException>(() => t.Populate());
        Assert.Equal(2048 - 1024, t.SwappedPages); // two batches were read before the failure: they stay restored
        Assert.Equal(1024, f.Accounting.Pages);
        Assert.Equal(1024, f.PoolInUse);

        using var cancel = new CancellationTokenSource();
        cancel.Cancel();
        Assert.Throws<OperationCanceledException>(() => t.Populate(cancel.Token));
        Assert.Equal(1024, t.SwappedPages);
        Assert.Equal(1024, f.Accounting.Pages);

        t.Populate();
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(2048, f.Accounting.Pages);
    }

    [Fact]
    public void Purge_frees_without_writing_anything()
    {
        using var f = new TtFixture();
        using var t = f.New(256);
        t.Populate();
        TtFixture.Fill(t, 1);
        t.Purge();
        Assert.Equal(TtState.Unpopulated, t.State);
        Assert.Equal(0, f.Store.BytesWritten);
        Assert.Equal(0, f.PoolInUse);
        t.Populate(); // a purged buffer is a fresh one
        Assert.Equal(TtState.Populated, t.State);
    }

    [Fact]
    public void Illegal_transitions_are_typed_errors_that_change_nothing()
    {
        using var f = new TtFixture();
        var dev = new TestDevice("gpu", ulong.MaxValue);
        using var t = f.New(16);
        Assert.Equal("bind", Assert.Throws<TtStateException>(() => t.Bind(dev)).Operation);
        Assert.Throws<TtStateException>(() => t.Unbind());
        Assert.Throws<TtStateException>(() => t.SwapOut());
        Assert.Throws<TtStateException>(() => t.Unpopulate());
        Assert.Throws<TtStateException>(() => t.Purge());
        Assert.Throws<TtStateException>(() => t.Read(0, new byte[1]));
        Assert.Throws<TtStateException>(() => t.DmaAddress(0));
        Assert.Equal(TtState.Unpopulated, t.State);

        t.Populate();
        Assert.Equal(TtState.Populated, Assert.Throws<TtStateException>(() => t.Populate()).State);
        t.Bind(dev);
        Assert.Throws<TtStateException>(() => t.Bind(dev));
        Assert.Throws<TtStateException>(() => t.SwapOut());
        Assert.Throws<TtStateException>(() => t.Unpopulate());
        Assert.Throws<TtStateException>(() => t.Purge());
        Assert.Throws<TtStateException>(() => t.Populate());
        Assert.Equal(TtState.Bound, t.State);
        t.Unbind();

        t.SwapOut();
        Assert.Throws<TtStateException>(() => t.Bind(dev));
        Assert.Throws<TtStateException>(() => t.Write(0, new byte[1]));
        Assert.Equal(16, t.SwappedPages);
        Assert.Throws<ArgumentOutOfRangeException>(() => t.SwapOut(-1));
        t.Dispose();
        Assert.Throws<ObjectDisposedException>(() => t.Populate());
        Assert.Equal(0, f.PoolInUse);
        Assert.Equal(0, f.Store.BytesInUse);
    }

    [Theory]
    [InlineData(TtState.Unpopulated)]
    [InlineData(TtState.Populated)]
    [InlineData(TtState.Bound)]
    [InlineData(TtState.SwappedOut)]
    public void Dispose_in_any_state_leaks_nothing(TtState state)
    {
        using var f = new TtFixture();
        var dev = new TestDevice("gpu", ulong.MaxValue);
        var t = f.New(300);
        if (state != TtState.Unpopulated) t.Populate();
        if (state == TtState.Bound) t.Bind(dev);
        if (state == TtState.SwappedOut) t.SwapOut(200);
        Assert.Equal(state, t.State);
        t.Dispose();
        t.Dispose();
        Assert.Equal(0, f.PoolInUse);
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(0, dev.Bound);
        Assert.Empty(f.Accounting.LruSnapshot());
    }

    [Fact]
    public void Binding_a_normal_buffer_to_a_64_bit_device_takes_the_pages_as_they_are()
    {
        using var f = new TtFixture();
        using var t = f.New(64);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 5);
        var dev = new TestDevice("gpu64", ulong.MaxValue);
        Assert.False(t.Bind(dev));
        Assert.Equal(Zone.Normal, t.Zone);
        Assert.True(t.DmaAddress(0) - TestDevice.Offset >= 4UL << 30);
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void Binding_a_normal_buffer_to_a_32_bit_device_copies_it_into_dma32_pages()
    {
        using var f = new TtFixture();
        using var t = f.New(600, CachingMode.WriteCombined);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 9);
        var dev = new TestDevice("gpu32", 0xFFFF_FFFF);
        Assert.True(t.Bind(dev));
        Assert.Equal(Zone.Dma32, t.Zone);
        for (int p = 0; p < t.PageCount; p++) Assert.True(t.DmaAddress(p) - TestDevice.Offset <= 0xFFFF_FFFF);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(600, f.Accounting.Dma32Pages);
        Assert.Equal(600, f.Accounting.Pages);
        Assert.Equal(600, f.PoolInUse);
        t.Unbind();
        Assert.False(t.Bind(dev)); // already reachable: no second copy
    }

    [Fact]
    public void A_full_disk_is_a_typed_error_and_the_buffer_keeps_its_pages()
    {
        using var f = new TtFixture(store: FileSwapStore.OverExisting("/dev/full"));
        using var t = f.New(128);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 2);
        var e = Assert.Throws<SwapStoreException>(() => t.SwapOut());
        Assert.Contains("ENOSPC", e.Message);
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(128, f.Accounting.Pages);
        Assert.Equal(0, f.Store.BytesInUse);
        Assert.Equal(sum, TtFixture.Checksum(t));
    }

    [Fact]
    public void An_injected_write_fault_leaves_the_buffer_as_it_was()
    {
        using var f = new TtFixture();
        using var t = f.New(128);
        t.Populate();
        ulong sum = TtFixture.Fill(t, 4);
        f.Store.Faults.FailWrites(1);
        Assert.Throws<SwapStoreException>(() => t.SwapOut());
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(sum, TtFixture.Checksum(t));
        Assert.Equal(128, t.SwapOut());
    }

    [Fact]
    public void External_pages_are_not_charged_not_swapped_and_not_freed()
    {
        using var f = new TtFixture();
        var blocks = new PageHandle[8];
        int n = f.Pool.Allocate(8, CachingMode.WriteBack, Zone.Normal, blocks);
        var t = PageArray.FromExternal(f.Accounting, blocks.AsSpan(0, n), CachingMode.WriteBack);
        Assert.Equal(TtState.Populated, t.State);
        Assert.Equal(0, f.Accounting.Pages);
        Assert.Throws<TtStateException>(() => t.SwapOut());
        Assert.Throws<TtStateException>(() => t.Unpopulate());
        t.Dispose();
        Assert.Equal(8, f.PoolInUse); // still the caller's
        f.Pool.Release(blocks.AsSpan(0, n), CachingMode.WriteBack);
    }
}
