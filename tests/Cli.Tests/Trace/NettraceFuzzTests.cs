using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using PagePool.Cli.Trace;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>
/// The trace reader against damaged files: a real .nettrace (recorded with `pagepool trace -o data/stress-churn.nettrace
/// -- stress churn -d 1500ms -t 2 -w 16M`) mutated by a seeded generator. Every case must end, quickly and in bounded
/// memory, either with events or with a typed NettraceFormatException; anything else is a misbehaviour.
/// PAGEPOOL_FUZZ_CASES sets the number of cases (default 3,000; a million for a long run).
/// </summary>
public sealed class NettraceFuzzTests
{
    private static readonly byte[] Trace = File.ReadAllBytes(DataFile("stress-churn.nettrace"));
    private static readonly int[] BlockSizeOffsets = FindBlockSizes(Trace, out ObjectOffsets);
    private static readonly int[] ObjectOffsets; // where the object holding each block starts

    // Copied next to the test assembly by the project (deterministic CI builds have no real source paths).
    private static string DataFile(string name) => Path.Combine(AppContext.BaseDirectory, "Trace", "data", name);

    private enum Outcome { Read, NotATrace, Damaged, Misbehaved }

    [Fact]
    public void The_recorded_trace_reads_whole_with_the_pool_events()
    {
        var summary = new TraceSummary();
        NettraceReader.Read(new MemoryStream(Trace), summary.Add);
        Assert.True(summary.Events > 100, $"{summary.Events} events");
        Assert.Contains("pagepool.pool.hit_ratio", summary.MetricSeries.Keys);
        Assert.True(BlockSizeOffsets.Length >= 4, $"{BlockSizeOffsets.Length} blocks found");
    }

    [Fact]
    public void A_negative_block_size_is_damage_at_the_size_field_not_an_endless_loop()
    {
        // Before: a size leading back to the start of its own object made the reader parse that object forever.
        var bytes = (byte[])Trace.Clone();
        int at = BlockSizeOffsets[1], back = LoopingSize(1);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at), back);
        var e = Assert.Throws<DamagedNettraceException>(() => NettraceReader.Read(new MemoryStream(bytes), _ => { }));
        Assert.Equal(at, e.Offset);
        Assert.Contains($"block size {back}", e.Message);
    }

    // The negative size that takes a reader trusting it back to the end tag of the object before the block's own:
    // it checks that tag, then reads the block's object again, and again.
    private static int LoopingSize(int block)
    {
        int content = (BlockSizeOffsets[block] + 4 + 3) & ~3;
        return ObjectOffsets[block] - 1 - content;
    }

    [Fact]
    public void A_huge_block_size_is_damage_before_anything_is_allocated_for_it()
    {
        var bytes = (byte[])Trace.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(BlockSizeOffsets[0]), int.MaxValue);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Throws<DamagedNettraceException>(() => NettraceReader.Read(new MemoryStream(bytes), _ => { }));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 4 << 20);
    }

    [Fact]
    public void A_trace_cut_short_is_damage_with_the_offset_where_it_ends()
    {
        var cut = Trace.AsSpan(0, Trace.Length / 2).ToArray();
        int events = 0;
        var e = Assert.Throws<DamagedNettraceException>(() => NettraceReader.Read(new MemoryStream(cut), _ => events++));
        Assert.InRange(e.Offset, 0, cut.Length);
        Assert.True(events > 0, "events before the cut are delivered");
    }

    [Fact]
    public void Bytes_that_are_not_a_trace_are_told_apart_from_a_damaged_trace()
    {
        Assert.Throws<NotANettraceException>(() => NettraceReader.Read(new MemoryStream(new byte[100]), _ => { }));
        Assert.Throws<NotANettraceException>(() => NettraceReader.Read(new MemoryStream(Encoding.ASCII.GetBytes("Nettra")), _ => { }));
        var header = Trace.AsSpan(0, 32).ToArray();
        header[20] ^= 1; // "!FastSerialization.1" misspelt
        Assert.Throws<NotANettraceException>(() => NettraceReader.Read(new MemoryStream(header), _ => { }));
        Assert.Throws<DamagedNettraceException>(() => NettraceReader.Read(new MemoryStream(Trace.AsSpan(0, 40).ToArray()), _ => { }));
    }

    [Fact]
    public void A_3_GiB_file_is_streamed_in_bounded_memory()
    {
        // Before: File.ReadAllBytes threw for anything over 2 GiB. A sparse file of 192 skippable 16 MiB blocks.
        string path = Path.Combine(Path.GetTempPath(), $"pagepool-big-{Guid.NewGuid():N}.nettrace");
        try
        {
            long blocks = WriteSparseTrace(path, 3L << 30);
            long before = GC.GetAllocatedBytesForCurrentThread();
            var watch = Stopwatch.StartNew();
            int events = 0;
            NettraceReader.Read(path, _ => events++);
            Assert.Equal(0, events);
            Assert.True(new FileInfo(path).Length >= 3L << 30);
            Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 40 << 20, $"allocated {(GC.GetAllocatedBytesForCurrentThread() - before) >> 20} MiB for {blocks} blocks");
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"took {watch.Elapsed}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Reading_dev_zero_stops_at_once_as_not_a_trace()
    {
        var watch = Stopwatch.StartNew();
        var e = Assert.Throws<NotANettraceException>(() => NettraceReader.Read("/dev/zero", _ => { }));
        Assert.Equal(0, e.Offset);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void Seeded_mutations_of_a_real_trace_end_in_events_or_a_typed_error_in_bounded_time_and_memory()
    {
        int cases = int.TryParse(Environment.GetEnvironmentVariable("PAGEPOOL_FUZZ_CASES"), out int n) && n > 0 ? n : 3000;
        var outcomes = new long[4];
        var failures = new List<string>();
        var worker = new Thread(() =>
        {
            try
            {
                for (int i = 0; i < cases; i++)
                {
                    var (outcome, detail) = RunCase(i);
                    outcomes[(int)outcome]++;
                    if (outcome == Outcome.Misbehaved && failures.Count < 10) failures.Add($"case {i}: {detail}");
                }
            }
            catch (Exception e)
            {
                failures.Add($"the fuzzer itself failed: {e}"); // never let it take the test process down
            }
        }, 64 << 20) { IsBackground = true }; // a hung reader must not keep the test process alive
        worker.Start();
        // A hang is a failure, not a stuck test run: a case takes milliseconds, allow a generous 50 ms each.
        Assert.True(worker.Join(TimeSpan.FromSeconds(60 + cases / 20)), "the reader did not finish: a mutation made it hang");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Equal(cases, outcomes.Sum());
        Assert.True(outcomes[(int)Outcome.Damaged] > cases / 4, $"read {outcomes[0]}, not a trace {outcomes[1]}, damaged {outcomes[2]}");
        string figures = $"nettrace fuzz: {cases} cases: read {outcomes[0]}, not a trace {outcomes[1]}, damaged {outcomes[2]}, misbehaved {outcomes[3]}";
        TestContext.Current.TestOutputHelper?.WriteLine(figures);
        if (Environment.GetEnvironmentVariable("PAGEPOOL_FUZZ_REPORT") is { Length: > 0 } report) File.AppendAllText(report, figures + "\n");
    }

    // One seeded case: mutate, read, classify. Misbehaved: any other exception, more than 5 s, or more than 64 MiB
    // allocated (the largest block the reader accepts is 16 MiB). A case takes about 3 ms; the time bound is wide
    // because the machines are shared (a case once took 1.3 s behind other builds) and still catches anything
    // quadratic or looping.
    private static (Outcome, string) RunCase(int seed)
    {
        var rng = new Random(seed);
        var (bytes, what) = Mutate(rng);
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var watch = Stopwatch.StartNew();
        Outcome outcome;
        string detail = what;
        try
        {
            int events = 0;
            NettraceReader.Read(new MemoryStream(bytes, writable: false), e => { events++; _ = e.Payload; });
            outcome = Outcome.Read;
        }
        catch (NotANettraceException e) when (e.Offset >= 0 && e.Offset <= bytes.Length)
        {
            outcome = Outcome.NotATrace;
        }
        catch (DamagedNettraceException e) when (e.Offset >= 0 && e.Offset <= bytes.Length)
        {
            outcome = Outcome.Damaged;
        }
        catch (Exception e)
        {
            return (Outcome.Misbehaved, $"{what}: {e.GetType().Name}: {e.Message}");
        }
        if (watch.Elapsed > TimeSpan.FromSeconds(5)) return (Outcome.Misbehaved, $"{what}: took {watch.Elapsed}");
        long used = GC.GetAllocatedBytesForCurrentThread() - allocated;
        if (used > 64L << 20) return (Outcome.Misbehaved, $"{what}: allocated {used >> 20} MiB");
        return (outcome, detail);
    }

    private static (byte[] Bytes, string What) Mutate(Random rng)
    {
        var t = Trace;
        switch (rng.Next(8))
        {
            case 7:
            {
                // The magic and serialization header: the file stops being a trace at all.
                var b = (byte[])t.Clone();
                int at = rng.Next(32);
                b[at] ^= (byte)(1 << rng.Next(8));
                return (b, $"header byte {at} flipped");
            }
            case 0:
            {
                int len = rng.Next(t.Length);
                return (t.AsSpan(0, len).ToArray(), $"truncated to {len}");
            }
            case 1:
            {
                var b = (byte[])t.Clone();
                int flips = 1 + rng.Next(8);
                for (int i = 0; i < flips; i++) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8));
                return (b, $"{flips} bits flipped");
            }
            case 2:
            {
                var b = (byte[])t.Clone();
                int at = rng.Next(b.Length);
                b[at] = (byte)rng.Next(256);
                return (b, $"byte {at} set");
            }
            case 3:
            {
                // Splice: a chunk of the file copied over another place (duplicated headers, misplaced blocks).
                int from = rng.Next(t.Length), to = rng.Next(t.Length), len = rng.Next(1, 4096);
                len = Math.Min(len, Math.Min(t.Length - from, t.Length - to));
                var b = (byte[])t.Clone();
                t.AsSpan(from, len).CopyTo(b.AsSpan(to));
                return (b, $"{len} bytes from {from} spliced at {to}");
            }
            case 4:
            {
                // Splice by insertion or deletion: everything after shifts, so every later offset is off.
                int at = rng.Next(t.Length), len = rng.Next(1, 64);
                if (rng.Next(2) == 0 && at + len <= t.Length)
                    return ([.. t.AsSpan(0, at), .. t.AsSpan(at + len)], $"{len} bytes deleted at {at}");
                var insert = new byte[len];
                rng.NextBytes(insert);
                return ([.. t.AsSpan(0, at), .. insert, .. t.AsSpan(at)], $"{len} bytes inserted at {at}");
            }
            case 5:
            {
                // A block size made huge, negative, zero or slightly off.
                var b = (byte[])t.Clone();
                int block = rng.Next(BlockSizeOffsets.Length), at = BlockSizeOffsets[block];
                int size = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(at));
                int[] choices = [int.MaxValue, int.MinValue, -1, -rng.Next(1, 1 << 20), 0, size + rng.Next(-8, 9), 16 << 20, (16 << 20) + 1, rng.Next(), LoopingSize(block)];
                int value = choices[rng.Next(choices.Length)];
                BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(at), value);
                return (b, $"block size at {at} set to {value}");
            }
            default:
            {
                // A length anywhere: an int32 of 0xFF.. or a run of varint continuation bytes.
                var b = (byte[])t.Clone();
                int at = rng.Next(b.Length - 4);
                if (rng.Next(2) == 0) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(at), rng.Next(2) == 0 ? int.MaxValue : -rng.Next(1, 100));
                else b.AsSpan(at, Math.Min(12, b.Length - at)).Fill(0xFF);
                return (b, $"huge length at {at}");
            }
        }
    }

    // The offsets of every block's size field: right after the EndObject tag that closes a *Block type name.
    private static int[] FindBlockSizes(byte[] t, out int[] objects)
    {
        var found = new List<(int Size, int Object)>();
        foreach (string type in new[] { "MetadataBlock", "EventBlock", "StackBlock", "SPBlock" })
        {
            var name = Encoding.ASCII.GetBytes(type);
            for (int at = t.AsSpan().IndexOf(name); at >= 0;)
            {
                int size = at + name.Length + 1;
                // [5][5][1][version][min version][name length][name][6][size]: the object starts 16 bytes before the name.
                if (at >= 16 && t[at - 4] == (byte)name.Length && t[at + name.Length] == 6) found.Add((size, at - 15));
                int next = t.AsSpan(at + 1).IndexOf(name);
                at = next < 0 ? -1 : at + 1 + next;
            }
        }
        found.Sort();
        objects = found.Select(f => f.Object).ToArray();
        return found.Select(f => f.Size).ToArray();
    }

    // A valid trace of `bytes` length, all of it SPBlock objects of 16 MiB whose content is never written (sparse).
    private static long WriteSparseTrace(string path, long bytes)
    {
        using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        f.Write(Trace.AsSpan(0, 32)); // magic and serialization header
        const int Size = 16 << 20;
        var type = Encoding.ASCII.GetBytes("SPBlock");
        long blocks = 0;
        Span<byte> header = stackalloc byte[12];
        Span<byte> size = stackalloc byte[4];
        while (f.Position < bytes)
        {
            f.WriteByte(5);
            f.WriteByte(5);
            f.WriteByte(1);
            BinaryPrimitives.WriteInt32LittleEndian(header, 2);
            BinaryPrimitives.WriteInt32LittleEndian(header[4..], 2);
            BinaryPrimitives.WriteInt32LittleEndian(header[8..], type.Length);
            f.Write(header);
            f.Write(type);
            f.WriteByte(6);
            BinaryPrimitives.WriteInt32LittleEndian(size, Size);
            f.Write(size);
            long padding = (4 - (f.Position & 3)) & 3;
            f.Seek(padding + Size, SeekOrigin.Current); // the content: a hole reading zeros
            f.WriteByte(6);
            blocks++;
        }
        f.WriteByte(1); // end of stream
        return blocks;
    }
}
