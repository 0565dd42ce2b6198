using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Cli.Bench;

/// <summary>
/// The pool's hit, miss and populate paths, its scaling, and the policies it was designed around, as four bench
/// groups (pool, scaling, policies, pooled) so one can run alone: the hit paths in a second or two.
/// </summary>
internal static unsafe class PoolBench
{
    private static int HitOps(BenchContext ctx) => ctx.Quick ? 200_000 : 1_000_000;

    private static PhysicalMemory NewMemory() => new(new MemoryOptions { Dma32Bytes = 0, NormalBytes = 1L << 30 });

    /// <summary>Group pool: the hit paths per caching mode, with and without the clear, and a 2 MiB populate.</summary>
    internal static void Run(BenchContext ctx)
    {
        using var memory = NewMemory();
        int ops = HitOps(ctx);

        using (var pool = new PoolAllocator(memory))
        {
            Warm(pool, CachingMode.WriteBack, PooledPages16M);
            Warm(pool, CachingMode.WriteCombined, 64);
            ctx.Add("pool.hit.wb.ns", HitLoop(ctx, "pool.hit.wb.ns", pool, CachingMode.WriteBack, ops), "allocate + release one 4 KiB WB page, warm pool, 16 MiB pooled (page cleared)");
            ctx.Add("pool.hit.wb.noclear.ns", HitLoop(ctx, "pool.hit.wb.noclear.ns", pool, CachingMode.WriteBack, ops, AllocationFlags.NoClear),
                "allocate (NoClear) + release one 4 KiB WB page: the pool's own overhead per hit");
            ctx.Add("pool.hit.wc.ns", HitLoop(ctx, "pool.hit.wc.ns", pool, CachingMode.WriteCombined, ops), "allocate + release one 4 KiB WC page, warm pool (cleared with streaming stores)");
            ctx.Add("pool.hit.uc.ns", HitLoop(ctx, "pool.hit.uc.ns", pool, CachingMode.Uncached, ops / 4), "allocate + release one 4 KiB UC page, warm pool (cleared, every line flushed)");

            var blocks = new PageHandle[512];
            pool.Release(blocks.AsSpan(0, pool.Allocate(512, CachingMode.WriteCombined, Zone.Normal, blocks)), CachingMode.WriteCombined);
            int populates = ctx.Quick ? 300 : 2_000;
            var populate = ctx.NsPerOp("pool.populate_2m.wc.us", populates, () =>
            {
                int n = pool.Allocate(512, CachingMode.WriteCombined, Zone.Normal, blocks);
                pool.Release(blocks.AsSpan(0, n), CachingMode.WriteCombined);
            }) / 1000;
            ctx.Add("pool.populate_2m.wc.us", populate, "allocate + release 512 WC pages (a 2 MiB buffer), warm pool");
        }
    }

    /// <summary>Group scaling: hit throughput on two threads over one, against the machine's own ceiling.</summary>
    internal static void RunScaling(BenchContext ctx)
    {
        using var memory = NewMemory();
        int ops = HitOps(ctx);
        using var pool = new PoolAllocator(memory);
        Warm(pool, CachingMode.WriteBack, PooledPages16M);
        Scaling(ctx, "pool.scaling.2t", () => pool.ReleasePage(pool.AllocatePage(CachingMode.WriteBack), CachingMode.WriteBack), ops,
            "hit throughput with two threads / one thread (WB)");
        Scaling(ctx, "pool.scaling.2t.noclear", () => pool.ReleasePage(pool.AllocatePage(CachingMode.WriteBack, Zone.Normal, AllocationFlags.NoClear), CachingMode.WriteBack), ops,
            "NoClear hit throughput with two threads / one thread (WB): what the threads share, without the clear");
        Scaling(ctx, "baseline.scaling.2t", null, ops,
            "the machine's own ceiling: two threads / one clearing private 4 KiB buffers (no shared state)");
    }

    /// <summary>Group policies: what the pool avoids (a miss, no pooling) and where pages are cleared.</summary>
    internal static void RunPolicies(BenchContext ctx)
    {
        using var memory = NewMemory();

        // What the pool avoids: every page fresh from the system, converted to WC, and converted back and freed.
        using (var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = 0, MagazinePages = 1 }))
        {
            int misses = ctx.Quick ? 2_000 : 10_000;
            var miss = ctx.NsPerOp("pool.miss.wc.ns", misses, () =>
            {
                var h = pool.AllocatePage(CachingMode.WriteCombined);
                pool.ReleasePage(h, CachingMode.WriteCombined);
                pool.Scan(long.MaxValue);
            });
            ctx.Add("pool.miss.wc.ns", miss, "fresh page + WB->WC change, then WC->WB and back to the system (nothing pooled)");
        }

        // Policy: keep write-back pages or give them straight back (Linux's choice).
        using (var pool = new PoolAllocator(memory, new PoolOptions { PoolWriteBack = false }))
        {
            int n = ctx.Quick ? 2_000 : 10_000;
            ctx.Add("pool.nopool.wb.ns", HitLoop(ctx, "pool.nopool.wb.ns", pool, CachingMode.WriteBack, n), "allocate + release one WB page with PoolWriteBack off: fresh page and punch each time");
        }

        // Policy: where pages are cleared. A caller's real cycle: take 64 pages, write all of them, give them back.
        ctx.Add("pool.cycle.clear_on_alloc.ns_per_page", Cycle(ctx, "pool.cycle.clear_on_alloc.ns_per_page", memory, ZeroPolicy.OnAllocate, AllocationFlags.None), "64 WB pages: allocate (cleared), caller writes every byte, release");
        ctx.Add("pool.cycle.clear_on_release.ns_per_page", Cycle(ctx, "pool.cycle.clear_on_release.ns_per_page", memory, ZeroPolicy.OnRelease, AllocationFlags.None), "64 WB pages: allocate, caller writes every byte, release (cleared)");
        ctx.Add("pool.cycle.no_clear.ns_per_page", Cycle(ctx, "pool.cycle.no_clear.ns_per_page", memory, ZeroPolicy.OnAllocate, AllocationFlags.NoClear), "64 WB pages with NoClear: the caller overwrites everything anyway");
    }

    private const int PooledPages16M = (16 << 20) / PhysicalMemory.PageSize;

    private static void Warm(PoolAllocator pool, CachingMode caching, int pages)
    {
        var held = new PageHandle[pages];
        for (int i = 0; i < pages; i++) held[i] = pool.AllocatePage(caching);
        foreach (var h in held) pool.ReleasePage(h, caching);
    }

    private static Samples HitLoop(BenchContext ctx, string metric, PoolAllocator pool, CachingMode caching, int ops, AllocationFlags flags = AllocationFlags.None)
        => ctx.NsPerOp(metric, ops, () => pool.ReleasePage(pool.AllocatePage(caching, Zone.Normal, flags), caching));

    /// <summary>Group pooled: the WB hit with 4 GiB pooled, read over pool.hit.wb.ns (16 MiB pooled).</summary>
    // Does the hit cost stay flat when the pool holds 4 GiB? The pages are taken with NoClear, so they are pooled
    // without ever being touched (no 4 GiB resident), and given back in one batch: the hit then runs on top of
    // a million pooled pages instead of 4096.
    internal static void RunPooled(BenchContext ctx)
    {
        int ops = HitOps(ctx);
        const long Bytes = 4L << 30;
        const int Pages = (int)(Bytes / PhysicalMemory.PageSize);
        if (ctx.Quick)
        {
            // A million misses to fill the pool take seconds (tens on a loaded machine): too long for CI's budget.
            ctx.Note("pool.hit.wb.ns.pooled_4g is measured by a full run only (filling 4 GiB takes seconds).");
            return;
        }
        if (SystemInfo.PhysicalMemoryBytes < 2 * Bytes)
        {
            ctx.Note($"pool.hit.wb.ns.pooled_4g not measured: it pools 4 GiB and this machine has {SystemInfo.PhysicalMemoryBytes >> 20} MiB.");
            return;
        }
        using var memory = new PhysicalMemory(new MemoryOptions { Dma32Bytes = 0, NormalBytes = Bytes + (64L << 20) });
        using var pool = new PoolAllocator(memory, new PoolOptions { LimitBytes = Bytes + (64L << 20) });
        var held = new PageHandle[Pages];
        for (int i = 0; i < held.Length; i++) held[i] = pool.AllocatePage(CachingMode.WriteBack, Zone.Normal, AllocationFlags.NoClear);
        pool.Release(held, CachingMode.WriteBack);
        ctx.Add("pool.hit.wb.ns.pooled_4g", HitLoop(ctx, "pool.hit.wb.ns.pooled_4g", pool, CachingMode.WriteBack, ops),
            "allocate + release one 4 KiB WB page with 4 GiB pooled (page cleared): against pool.hit.wb.ns (16 MiB)");
    }

    // Two threads running an operation at once, against one alone, interleaved rep by rep so both see the same
    // machine. A null operation clears a private page: no shared state at all, the ceiling of this machine.
    private static void Scaling(BenchContext ctx, string metric, Action? op, int ops, string description)
        => TwoThreadScaling.Add(ctx, metric, _ => op, ops, description);

    private static Samples Cycle(BenchContext ctx, string metric, PhysicalMemory memory, ZeroPolicy zeroing, AllocationFlags flags)
    {
        using var pool = new PoolAllocator(memory, new PoolOptions { Zeroing = zeroing });
        const int Pages = 64;
        var held = new PageHandle[Pages];
        int rounds = ctx.Quick ? 2_000 : 10_000;
        return ctx.NsPerOp(metric, rounds, () =>
        {
            for (int i = 0; i < Pages; i++)
            {
                held[i] = pool.AllocatePage(CachingMode.WriteBack, Zone.Normal, flags);
                memory.GetSpan(held[i]).Fill(0x5A);
            }
            for (int i = 0; i < Pages; i++) pool.ReleasePage(held[i], CachingMode.WriteBack);
        }) / Pages;
    }
}
