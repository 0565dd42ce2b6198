using PagePool.Memory;
using PagePool.Pool;
using PagePool.Tt;

namespace PagePool.Allocator.Tests;

/// <summary>A memory space, a pool, a store and accounting for one test; disposing checks nothing leaked.</summary>
internal sealed class TtFixture : IDisposable
{
    internal readonly PhysicalMemory Memory;
    internal readonly PoolAllocator Pool;
    internal readonly SwapStore Store;
    internal readonly BufferAccounting Accounting;

    internal TtFixture(bool memfd = false, long limitBytes = 64L << 20, long dma32LimitBytes = 32L << 20, long restoreBatch = 32L << 20, SwapStore? store = null, bool faultIn = false)
    {
        Memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 16L << 20, Dma32Bytes = 64L << 20, NormalBytes = 256L << 20 });
        Pool = new PoolAllocator(Memory);
        Store = store ?? (memfd ? SwapStore.CreateMemfd() : SwapStore.CreateFile());
        Accounting = new BufferAccounting(Pool, Store, new AccountingOptions
        {
            PageLimitBytes = limitBytes, Dma32LimitBytes = dma32LimitBytes, RestoreBatchBytes = restoreBatch, FaultInOnAccess = faultIn,
        });
    }

    internal PageArray New(int pages, CachingMode caching = CachingMode.WriteBack, Zone zone = Zone.Normal, TtFlags flags = TtFlags.None)
        => new(Accounting, pages, caching, zone, flags);

    /// <summary>Fill with a pattern seeded by <paramref name="seed"/>; returns its checksum.</summary>
    internal static ulong Fill(PageArray t, ulong seed)
    {
        var bytes = Pattern(t.Bytes, seed);
        t.Write(0, bytes);
        return Checksum(bytes);
    }

    /// <summary>Populate, fill with a pattern seeded by <paramref name="seed"/>, swap out and back in; the bytes must come back whole.</summary>
    internal void AssertSwapRoundTrip(PageArray t, ulong seed)
    {
        t.Populate();
        ulong sum = Fill(t, seed);
        t.SwapOut();
        t.Populate();
        Xunit.Assert.Equal(sum, Checksum(t));
        Xunit.Assert.Equal(0, Store.BytesInUse);
    }

    internal static byte[] Pattern(long length, ulong seed)
    {
        var bytes = new byte[length];
        new Random((int)seed).NextBytes(bytes);
        return bytes;
    }

    internal static ulong Checksum(PageArray t)
    {
        var bytes = new byte[t.Bytes];
        t.Read(0, bytes);
        return Checksum(bytes);
    }

    // FNV-1a over 8-byte words: any flipped, lost or moved word changes it.
    internal static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        ulong h = 0xCBF29CE484222325UL;
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(bytes);
        for (int i = 0; i < words.Length; i++) h = (h ^ words[i] ^ (ulong)i) * 0x100000001B3UL;
        return h;
    }

    /// <summary>Pages callers hold from the pool now (zero once every array is gone).</summary>
    internal long PoolInUse => Pool.Statistics().Sum(s => s.InUsePages);

    public void Dispose()
    {
        Store.Dispose();
        Pool.Dispose();
        Memory.Dispose();
    }
}
