using System.IO.Pipelines;
using PagePool.Buffers;
using PagePool.Memory;
using PagePool.Pool;

// Uses PagePool from its packages only, checks what it did, and exits 0 only when every check held.
int failures = 0;
void Check(bool ok, string what)
{
    Console.WriteLine($"{(ok ? "ok  " : "FAIL")} {what}");
    if (!ok) failures++;
}

using var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 256L << 20 });
using var pool = new PoolAllocator(memory);
var pattern = new byte[PhysicalMemory.PageSize];
new Random(2026).NextBytes(pattern);
var back = new byte[PhysicalMemory.PageSize];

// 1. One write-back page: the pool's fast path (it asks the C shim for the current CPU).
var page = pool.AllocatePage(CachingMode.WriteBack);
memory.Write(page, 0, pattern);
memory.Read(page, 0, back);
Check(back.AsSpan().SequenceEqual(pattern), "a write-back page reads back what was written");
pool.ReleasePage(page, CachingMode.WriteBack);

// 2. 64 write-combined pages: a caching change, which flushes every cache line through the shim.
var blocks = new PageHandle[64];
int n = pool.Allocate(64, CachingMode.WriteCombined, Zone.Normal, blocks);
bool allWc = true, allRead = true;
foreach (var b in blocks.AsSpan(0, n))
{
    allWc &= memory.CachingOf(b) == CachingMode.WriteCombined;
    for (int p = 0; p < b.PageCount; p++)
    {
        memory.Write(b, p * PhysicalMemory.PageSize, pattern);
        memory.Read(b, p * PhysicalMemory.PageSize, back);
        allRead &= back.AsSpan().SequenceEqual(pattern);
    }
}
Check(allWc && n >= 1, $"64 pages allocated write-combined as {n} block(s)");
Check(allRead, "every write-combined page reads back what was written");
pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
n = pool.Allocate(64, CachingMode.WriteCombined, Zone.Normal, blocks);
bool zero = true;
foreach (var b in blocks.AsSpan(0, n)) zero &= memory.GetSpan(b).IndexOfAnyExcept((byte)0) < 0;
Check(zero, "pages taken again from the pool read zero");
pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);

// 3. The MemoryPool<byte>: whole pages, page aligned, and no use after Dispose.
using var memoryPool = new PageMemoryPool(pool);
var owner = memoryPool.Rent(10_000);
var buffer = owner.Memory;
unsafe
{
    using var pin = buffer.Pin();
    Check(buffer.Length == 16384 && (nuint)pin.Pointer % PhysicalMemory.PageSize == 0, $"Rent(10000) gave {buffer.Length} page-aligned bytes");
}
buffer.Span.Fill(0xA5);
Check(buffer.Span.IndexOfAnyExcept((byte)0xA5) < 0, "the rented buffer holds what was written");
owner.Dispose();
owner.Dispose();
bool refused;
try { _ = buffer.Span.Length; refused = false; }
catch (ObjectDisposedException) { refused = true; }
Check(refused, "a disposed buffer refuses access, and a second Dispose is harmless");

// 4. A Pipe over the pool: 64 MiB, every byte checked.
var pipe = new Pipe(new PipeOptions(pool: memoryPool));
const long Total = 64L << 20;
var writer = Task.Run(async () =>
{
    for (long at = 0; at < Total;)
    {
        var span = pipe.Writer.GetSpan(PhysicalMemory.PageSize);
        int len = (int)Math.Min(span.Length, Total - at);
        for (int i = 0; i < len; i++) span[i] = (byte)((at + i) * 7 >> 3);
        pipe.Writer.Advance(len);
        at += len;
        await pipe.Writer.FlushAsync();
    }
    await pipe.Writer.CompleteAsync();
});
long read = 0, wrong = 0;
while (true)
{
    var result = await pipe.Reader.ReadAsync();
    foreach (var segment in result.Buffer)
        foreach (byte v in segment.Span)
            if (v != (byte)(read++ * 7 >> 3)) wrong++;
    pipe.Reader.AdvanceTo(result.Buffer.End);
    if (result.IsCompleted) break;
}
await pipe.Reader.CompleteAsync();
await writer;
Check(read == Total && wrong == 0, $"a Pipe over PageMemoryPool moved {read >> 20} MiB, {wrong} bytes wrong");
Check(pool.InUsePages(CachingMode.WriteBack) == 0, "every buffer went back to the pool");

// 5. The shim came from the package: the loader found libppshim.so under this program's runtimes/ folder.
var shim = File.ReadLines("/proc/self/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
    .Where(f => f.Length >= 6 && f[5].EndsWith("/libppshim.so")).Select(f => f[5]).FirstOrDefault();
Check(shim is not null && shim.StartsWith(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native")),
    $"libppshim.so loaded from the package's native asset ({shim ?? "not loaded"})");

Console.WriteLine(failures == 0 ? "consumer: all checks passed" : $"consumer: {failures} check(s) failed");
return failures == 0 ? 0 : 1;
