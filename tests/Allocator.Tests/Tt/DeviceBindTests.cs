// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using PagePool.Dma;
using PagePool.Memory;
using PagePool.Tt;
using Xunit;

namespace PagePool.Allocator.Tests;

/// <summary>Buffers bound to devices of the DMA layer: mapped through each kind of ops, copied only when a device cannot address the pages.</summary>
public sealed class DeviceBindTests
{
    private sealed class Machine : IDisposable
    {
        internal readonly TtFixture Tt = new();
        internal readonly DmaPlatform Platform;

        internal Machine() => Platform = new DmaPlatform(Tt.Memory, new DmaPlatformOptions { SwiotlbBytes = 4L << 20, Checker = true });

        internal DmaDevice Device(string name, DmaOpsKind kind, int maskBits)
            => Platform.CreateDevice(new DmaDeviceOptions { Name = name, OpsKind = kind, MaskBits = maskBits });

        internal PageArray Filled(int pages, ulong seed, out byte[] pattern)
        {
            var t = Tt.New(pages);
            t.Populate();
            pattern = TtFixture.Pattern(t.Bytes, seed);
            t.Write(0, pattern);
            return t;
        }

        public void Dispose()
        {
            Platform.Dispose();
            Tt.Dispose();
        }
    }

    // What the device reads at each page's DMA address, page by page.
    private static byte[] DeviceView(PageArray t, DmaDevice device)
    {
        var bytes = new byte[t.Bytes];
        for (int p = 0; p < t.PageCount; p++) device.Engine.Read(t.DmaAddress(p), bytes.AsSpan(p * 4096, 4096));
        return bytes;
    }

    [Fact]
    public void A_64_bit_direct_device_maps_the_pages_where_they_are()
    {
        using var m = new Machine();
        var dev = m.Device("gpu64", DmaOpsKind.Direct, 64);
        using var t = m.Filled(300, 1, out var pattern);
        Assert.False(t.Bind(dev));
        Assert.Equal(TtState.Bound, t.State);
        Assert.Same(dev, t.BoundDevice);
        Assert.Equal(Zone.Normal, t.Zone);
        Assert.True(t.DmaAddress(0) >= 4UL << 30, "dma-direct hands out the physical address, above 4 GiB for a Normal page");
        Assert.Equal(pattern, DeviceView(t, dev));
        Assert.True(m.Platform.Checker!.ActiveMappings(dev) > 0);
        t.Unbind();
        Assert.Equal(0, m.Platform.Checker.ActiveMappings(dev));
        Assert.Null(t.BoundDevice);
        Assert.Equal(TtState.Populated, t.State);
    }

    [Fact]
    public void A_32_bit_direct_device_gets_copies_in_dma32_pages()
    {
        using var m = new Machine();
        var dev = m.Device("gpu32", DmaOpsKind.Direct, 32);
        using var t = m.Filled(300, 2, out var pattern);
        Assert.True(t.Bind(dev));
        Assert.Equal(Zone.Dma32, t.Zone);
        for (int p = 0; p < t.PageCount; p++) Assert.True(t.DmaAddress(p) <= 0xFFFF_FFFF, $"page {p} at 0x{t.DmaAddress(p):x}");
        Assert.Equal(pattern, DeviceView(t, dev));
        t.Unbind();
        var cpu = new byte[t.Bytes];
        t.Read(0, cpu);
        Assert.Equal(pattern, cpu);
        Assert.Equal(300, m.Tt.Pool.InUsePages(CachingMode.WriteBack)); // the Normal pages went back
    }

    [Fact]
    public void A_32_bit_device_behind_an_iommu_takes_the_pages_without_a_copy()
    {
        using var m = new Machine();
        var dev = m.Device("gpu32-iommu", DmaOpsKind.Iommu, 32);
        using var t = m.Filled(300, 3, out var pattern);
        Assert.False(t.Bind(dev));
        Assert.Equal(Zone.Normal, t.Zone);
        for (int p = 0; p < t.PageCount; p++) Assert.True(t.DmaAddress(p) <= 0xFFFF_FFFF, $"IOVA of page {p} is 0x{t.DmaAddress(p):x}");
        Assert.Equal(pattern, DeviceView(t, dev));
        t.Unbind();
        Assert.Equal(0, m.Platform.Checker!.ActiveMappings(dev));
    }

    [Fact]
    public void Swiotlb_ops_bounce_the_pages_and_the_syncs_carry_device_writes_back()
    {
        using var m = new Machine();
        var dev = m.Device("tdx", DmaOpsKind.Swiotlb, 64);
        using var t = m.Filled(16, 4, out var pattern);
        Assert.False(t.Bind(dev));
        Assert.True(m.Platform.SwiotlbUsedBytes >= t.Bytes);
        Assert.Equal(pattern, DeviceView(t, dev));
        var written = TtFixture.Pattern(4096, 5);
        dev.Engine.Write(t.DmaAddress(7), written);
        t.SyncForCpu();
        var page = new byte[4096];
        t.Read(7 * 4096, page);
        Assert.Equal(written, page);
        t.Unbind();
        Assert.Equal(0, m.Platform.SwiotlbUsedBytes);
    }

    [Fact]
    public void A_direct_device_below_dma32_refuses_and_the_buffer_stays_populated_and_unmapped()
    {
        using var m = new Machine();
        var dev = m.Device("isa", DmaOpsKind.Direct, 24); // DMA32 pages start at 16 MiB
        using var t = m.Tt.New(8, zone: Zone.Dma32);
        t.Populate();
        Assert.Throws<DmaMappingException>(() => t.Bind(dev));
        Assert.Equal(TtState.Populated, t.State);
        Assert.Null(t.BoundDevice);
        Assert.Equal(0, m.Platform.Checker!.ActiveMappings(dev));
        Assert.Throws<TtStateException>(() => t.DmaAddress(0));
    }

    [Fact]
    public void A_device_of_another_memory_space_is_refused()
    {
        using var m = new Machine();
        using var other = new Machine();
        var dev = other.Device("elsewhere", DmaOpsKind.Direct, 64);
        using var t = m.Filled(4, 6, out _);
        Assert.Throws<ArgumentException>(() => t.Bind(dev));
        Assert.Equal(TtState.Populated, t.State);
    }

    [Fact]
    public void Disposing_a_bound_buffer_unmaps_it_and_the_device_release_finds_nothing_pending()
    {
        using var m = new Machine();
        var dev = m.Device("gpu", DmaOpsKind.Iommu, 64);
        var t = m.Filled(40, 7, out _);
        t.Bind(dev);
        t.Dispose();
        Assert.Equal(0, m.Platform.Checker!.ActiveMappings(dev));
        dev.Dispose();
        Assert.Equal(0, m.Platform.Checker.CountOf(DmaCheckClass.PendingAtRelease));
        Assert.Equal(0, m.Tt.PoolInUse);
    }

    [Fact]
    public void A_buffer_whose_device_was_released_first_still_unbinds()
    {
        using var m = new Machine();
        var dev = m.Device("gpu", DmaOpsKind.Direct, 64);
        using var t = m.Filled(4, 8, out var pattern);
        t.Bind(dev);
        dev.Dispose();
        t.Unbind();
        Assert.Equal(TtState.Populated, t.State);
        var cpu = new byte[t.Bytes];
        t.Read(0, cpu);
        Assert.Equal(pattern, cpu);
    }

    [Fact]
    public void Anonymous_is_the_state_of_pages_no_device_holds()
    {
        using var m = new Machine();
        var dev = m.Device("gpu", DmaOpsKind.Direct, 64);
        using var vram = new VramRegion(1L << 20);
        using var t = m.Tt.New(16);
        Assert.False(t.IsAnonymous); // no pages
        t.Populate();
        Assert.True(t.IsAnonymous);
        t.Bind(dev);
        Assert.False(t.IsAnonymous); // the device state
        t.Unbind();
        Assert.True(t.IsAnonymous);
        t.SwapOut();
        Assert.True(t.IsAnonymous); // the swap cache
        t.Populate();
        t.MoveToVram(vram);
        Assert.False(t.IsAnonymous);
        t.MoveToSystem();
        Assert.True(t.IsAnonymous);
    }
}
