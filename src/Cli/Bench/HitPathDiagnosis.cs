using System.Runtime.InteropServices;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Cli.Bench;

/// <summary>
/// Why the hit path costs what it costs, measured from outside the library (group diagnosis; not gated):
/// the synchronisation the hit does today on private cache lines alone, and the two-thread NoClear scaling
/// with nothing shared but the pool, or nothing shared at all, to find what bounces between cores.
/// </summary>
internal static unsafe partial class HitPathDiagnosis
{
    [LibraryImport("libc", EntryPoint = "sched_getcpu")]
    [SuppressGCTransition]
    private static partial int SchedGetCpu();

    // One slot and one metadata word, each on its own cache line, private to the measuring thread.
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private struct PrivateLines
    {
        [FieldOffset(0)] public object? Slot;
        [FieldOffset(64)] public long Meta;
        [FieldOffset(128)] public int Count;
    }

    internal static void Run(BenchContext ctx)
    {
        int ops = ctx.Quick ? 200_000 : 1_000_000;
        var lines = new PrivateLines { Slot = new object() };
        // What a pool hit synchronises today: the CPU number and an exchange of the per-CPU slot on take and on
        // give (two each), the release compare-and-swap of the metadata word, and the slot put back twice.
        var sync = () =>
        {
            int cpu = SchedGetCpu();
            var cc = Interlocked.Exchange(ref lines.Slot, null);
            lines.Count += cpu & 1;
            Volatile.Write(ref lines.Slot, cc);
            long w = Volatile.Read(ref lines.Meta);
            Interlocked.CompareExchange(ref lines.Meta, w + 1, w);
            cpu = SchedGetCpu();
            cc = Interlocked.Exchange(ref lines.Slot, null);
            lines.Count -= cpu & 1;
            Volatile.Write(ref lines.Slot, cc);
        };
        ctx.Add("baseline.hit_sync.ns", ctx.NsPerOp("baseline.hit_sync.ns", ops, sync),
            "2x sched_getcpu + 3 locked read-modify-writes + 2 release stores on private lines: the hit's synchronisation alone");
        // The same after a 4 KiB clear, as in a hit: a locked instruction waits for every earlier store to leave
        // the store buffer, so the clear's 128 vector stores are paid inside the first atomic that follows.
        byte* page = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
        try
        {
            ctx.Add("baseline.clear_then_sync.ns", ctx.NsPerOp("baseline.clear_then_sync.ns", ops, () =>
            {
                NativeMemory.Clear(page, 4096);
                sync();
            }), "a 4 KiB clear then the hit's synchronisation: against baseline.memset_4k.ns + baseline.hit_sync.ns");
            ctx.Add("baseline.ntclear_then_sync.ns", ctx.NsPerOp("baseline.ntclear_then_sync.ns", ops / 10, () =>
            {
                CachingStores.ClearPages(CachingMode.WriteCombined, new Span<byte>(page, 4096));
                sync();
            }), "a 4 KiB streaming clear + sfence, then the hit's synchronisation: the floor of a WC hit with today's atomics");
        }
        finally
        {
            NativeMemory.AlignedFree(page);
        }

        // The streaming-clear floor on a page of the pool's own memory (a memfd mapping of 4 KiB pages) rather than
        // on NativeMemory: if pool.hit.wc follows this and not baseline.ntclear_4k.ns, the memory is the cost.
        using (var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 64L << 20 }))
        {
            var h = memory.AllocateBlock(Zone.Normal, 0);
            try
            {
                fixed (byte* p = memory.GetSpan(h))
                {
                    byte* q = p;
                    ctx.Add("baseline.ntclear_4k.memfd.ns", ctx.NsPerOp("baseline.ntclear_4k.memfd.ns", ops / 10, () => CachingStores.ClearPages(CachingMode.WriteCombined, new Span<byte>(q, 4096))),
                        "baseline.ntclear_4k.ns on a page of a PhysicalMemory (memfd, 4 KiB pages) instead of NativeMemory");
                    // The same page cleared and then the pool's own bookkeeping of a hit on it, through the public
                    // API: the page's caching read back (a metadata load after the clear, as the release does).
                    ctx.Add("baseline.ntclear_4k.memfd_then_meta.ns", ctx.NsPerOp("baseline.ntclear_4k.memfd_then_meta.ns", ops / 10, () =>
                    {
                        CachingStores.ClearPages(CachingMode.WriteCombined, new Span<byte>(q, 4096));
                        if (memory.CachingOf(h) != CachingMode.WriteBack) throw new InvalidOperationException("bench: the page changed caching.");
                    }), "the memfd-page streaming clear, then a read of that page's metadata word (PhysicalMemory.CachingOf)");
                }
            }
            finally
            {
                memory.FreeBlock(h);
            }
        }

        // Two threads, each with its own pool over one memory: only PhysicalMemory (metadata words, arenas) is shared.
        using (var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 256L << 20 }))
        {
            var pools = new[] { new PoolAllocator(memory), new PoolAllocator(memory) };
            try
            {
                foreach (var p in pools) p.ReleasePage(p.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);
                TwoThreadScaling.Add(ctx, "pool.scaling.2t.noclear.pool_per_thread", t => NoClearHit(pools[t]), ops,
                    "NoClear hit, two threads / one, each thread its own pool over one PhysicalMemory");
            }
            finally
            {
                foreach (var p in pools) p.Dispose();
            }
        }

        // Nothing shared: each thread its own memory and pool. The pool's own ceiling on this machine.
        var memories = new[] { NewSmallMemory(), NewSmallMemory() };
        var own = memories.Select(m => new PoolAllocator(m)).ToArray();
        try
        {
            foreach (var p in own) p.ReleasePage(p.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack);
            TwoThreadScaling.Add(ctx, "pool.scaling.2t.noclear.memory_per_thread", t => NoClearHit(own[t]), ops,
                "NoClear hit, two threads / one, each thread its own PhysicalMemory and pool (nothing shared)");
        }
        finally
        {
            foreach (var p in own) p.Dispose();
            foreach (var m in memories) m.Dispose();
        }
    }

    private static PhysicalMemory NewSmallMemory() => new(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 64L << 20 });

    private static Action NoClearHit(PoolAllocator pool)
        => () => pool.ReleasePage(pool.AllocatePage(CachingMode.WriteBack, Zone.Normal, AllocationFlags.NoClear), CachingMode.WriteBack);
}
