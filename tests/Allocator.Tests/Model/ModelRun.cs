using PagePool.Dma;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Tt;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// Runs a sequence of steps against a fresh machine (a memory space, a pool, page arrays with their accounting, swap
/// store and VRAM, a DMA platform with one device of each kind and the checker on, coherent DMA memory) and against the models
/// (<see cref="PoolModel"/>, <see cref="TtModel"/>, <see cref="DmaModel"/>), step by step, and returns the first
/// disagreement (null when there is none). Every step is checked: results, contents, the errors of illegal steps (and
/// that an illegal step changed nothing), and the accounting of every page, mapping, slot and fault after it.
/// </summary>
public sealed partial class ModelRun : IDisposable
{
    private const int AuditEvery = 32;
    // Allocations outnumber releases a little; a cap keeps a run of millions of steps inside the memory space.
    private const int MaxBuffers = 400;
    private static readonly MemoryOptions Space = new() { ArenaBytes = 8L << 20, Dma32Bytes = 64L << 20, NormalBytes = 256L << 20 };
    private const long SwiotlbBytes = 2L << 20; // the smallest pool: 1024 slots, far more than the mappings a run keeps

    private readonly PhysicalMemory _memory = new(Space);
    private readonly PoolAllocator _pool, _foreign;
    private readonly PoolModel _model = new();
    private readonly Dictionary<int, PageHandle[]> _handles = new();
    private readonly List<Released> _released = new();

    /// <summary>A buffer given back, by the tag of the step that allocated it: its handles are stale now.</summary>
    private sealed record Released(int Tag, PageHandle[] Handles);
    private readonly long _limitPages;
    private bool _skipped, _refused;
    private int _resolved; // the tag of what this step acted on, for pinning
    private readonly ModelTally _tally;

    public ModelRun(long limitBytes, bool fileStore = false)
    {
        _tally = new ModelTally();
        _pool = new PoolAllocator(_memory, new PoolOptions { LimitBytes = limitBytes });
        _foreign = new PoolAllocator(_memory);
        _limitPages = limitBytes / PhysicalMemory.PageSize;
        _platform = new DmaPlatform(_memory, new DmaPlatformOptions { SwiotlbBytes = SwiotlbBytes, Checker = true });
        _devices = ModelDevices.Options.Select(_platform.CreateDevice).ToArray();
        _store = fileStore ? SwapStore.CreateFile() : SwapStore.CreateMemfd();
        _accounting = new BufferAccounting(_pool, _store, new AccountingOptions
        {
            PageLimitBytes = TtPageLimit * PhysicalMemory.PageSize, Dma32LimitBytes = TtDma32PageLimit * PhysicalMemory.PageSize,
            RestoreBatchBytes = 8 * PhysicalMemory.PageSize, // several batches per restore
        });
        _vram = new VramRegion(VramPages * PhysicalMemory.PageSize);
    }

    public void Dispose()
    {
        foreach (var a in _arrays.Values) a.Dispose();
        _platform.Dispose();
        _vram.Dispose();
        _store.Dispose();
        _foreign.Dispose();
        _pool.Dispose();
        _memory.Dispose();
    }

    /// <summary>Run every step; the first disagreement as "step N (op): what differed", or null.</summary>
    public static string? Execute(IReadOnlyList<ModelOp> ops, long limitBytes, bool fileStore = false)
        => Execute(ops, limitBytes, fileStore, out _, out _);

    /// <summary>
    /// As <see cref="Execute(IReadOnlyList{ModelOp}, long, bool)"/>, with the index of the failing step (the count
    /// when the end failed) and what the steps did (<see cref="ModelTally"/>).
    /// </summary>
    public static string? Execute(IReadOnlyList<ModelOp> ops, long limitBytes, bool fileStore, out int failedStep, out ModelTally tally)
    {
        var failure = Execute(ops, limitBytes, fileStore, out failedStep, out int[] _, out tally);
        return failure;
    }

    /// <summary>
    /// The same sequence with every step pinned to what it acted on in this run (see <see cref="ModelOp.Pin"/>): it
    /// runs the same way, and keeps doing so when steps are deleted from it.
    /// </summary>
    public static List<ModelOp> Pin(IReadOnlyList<ModelOp> ops, long limitBytes, bool fileStore)
    {
        var resolved = new int[ops.Count];
        Execute(ops, limitBytes, fileStore, out _, out _, out _, resolved);
        return ops.Select((op, i) => op.Pin == ModelOp.Unpinned && resolved[i] != ModelOp.Unpinned ? op with { Pin = resolved[i] } : op).ToList();
    }

    private static string? Execute(IReadOnlyList<ModelOp> ops, long limitBytes, bool fileStore, out int failedStep, out int[] acted, out ModelTally tally, int[]? resolved = null)
    {
        failedStep = -1;
        using var run = new ModelRun(limitBytes, fileStore);
        tally = run._tally;
        acted = tally.Acted;
        for (int i = 0; i < ops.Count; i++)
        {
            string? failure;
            run._skipped = run._refused = false;
            run._resolved = ModelOp.Unpinned;
            try
            {
                failure = run.Step(ops[i]) ?? run.CheckAccounting(audit: i % AuditEvery == AuditEvery - 1);
            }
            catch (Exception e)
            {
                failure = $"unexpected {e.GetType().Name}: {e.Message}";
            }
            if (resolved is not null) resolved[i] = run._resolved;
            if (failure is not null)
            {
                failedStep = i;
                return $"step {i} ({ops[i]}): {failure}";
            }
            if (!run._skipped) acted[(int)ops[i].Kind]++;
            if (run._refused) tally.Refused[(int)ops[i].Kind]++;
        }
        failedStep = ops.Count;
        return run.Finish();
    }

    /// <summary>A step with nothing to act on (no live buffer, array or mapping of the kind it needs): it does nothing.</summary>
    private string? Skip()
    {
        _skipped = true;
        return null;
    }

    private string? Step(ModelOp op) => op.Kind switch
    {
        >= ModelOpKind.TtCreate => TtStep(op),
        >= ModelOpKind.DmaMap => DmaStep(op),
        _ => PoolStep(op),
    };

    /// <summary>
    /// Run <paramref name="real"/> and compare its outcome with the model's: no exception when
    /// <paramref name="expected"/> is null, else exactly that type.
    /// </summary>
    private string? Expect(Type? expected, Action real, string what)
    {
        try
        {
            real();
        }
        catch (Exception e) when (e.GetType() == expected)
        {
            _refused = true;
            return null;
        }
        catch (Exception e)
        {
            return expected is null ? $"{what} failed with {e.GetType().Name}: {e.Message}" : $"{what}: expected {expected.Name}, got {e.GetType().Name}: {e.Message}";
        }
        return expected is null ? null : $"{what} succeeded, the model expected {expected.Name}";
    }

    /// <summary>The target of a step among <paramref name="live"/>: the one its pin names, else index A modulo the count; recorded for pinning.</summary>
    private T? Resolve<T>(ModelOp op, IReadOnlyList<T> live, Func<T, int> tagOf) where T : class
    {
        T? target = op.Pin switch
        {
            ModelOp.Unpinned => live.Count == 0 ? null : live[op.A % live.Count],
            ModelOp.Nothing => null,
            _ => live.FirstOrDefault(x => tagOf(x) == op.Pin),
        };
        _resolved = target is null ? ModelOp.Nothing : tagOf(target);
        return target;
    }

    private PoolModel.Buffer? LiveAt(ModelOp op) => Resolve(op, _model.Live, b => b.Tag);

    private string? PoolStep(ModelOp op)
    {
        switch (op.Kind)
        {
            case ModelOpKind.Allocate:
            {
                if (_model.Live.Count >= MaxBuffers) return Skip();
                var flags = op.B != 0 ? AllocationFlags.NoClear : AllocationFlags.None;
                var blocks = new PageHandle[op.A];
                int n = _pool.Allocate(op.A, op.Caching, op.Zone, blocks, flags);
                var handles = blocks[..n];
                if (handles.Sum(h => h.PageCount) != op.A) return $"blocks cover {handles.Sum(h => h.PageCount)} pages, asked {op.A}";
                foreach (var h in handles)
                {
                    if (_memory.CachingOf(h) != op.Caching) return $"{h} is {_memory.CachingOf(h)}";
                    if (_memory.ZoneOf(h) != op.Zone) return $"{h} is in {_memory.ZoneOf(h)}";
                }
                var b = _model.Allocate(op.Tag, op.Caching, op.Zone, op.A, op.B != 0);
                _handles[b.Id] = handles;
                return b.Bytes is null ? null : Compare(b, "as handed out");
            }
            case ModelOpKind.Release:
            {
                if (LiveAt(op) is not { } b) return Skip();
                var handles = _handles[b.Id];
                if (UnmapAll(b) is { } f) return f; // a driver unmaps before it frees
                _pool.Release(handles, b.Caching);
                _model.Release(b);
                _handles.Remove(b.Id);
                _released.Add(new Released(b.Tag, handles));
                return null;
            }
            case ModelOpKind.ReleaseStale:
            {
                if (Resolve(op, _released, r => r.Tag)?.Handles is not { } handles) return Skip();
                return ExpectHandleError(() => _pool.Release(handles, _memory.CachingOf(handles[0]) is var c ? c : default),
                    HandleError.DoubleFree, HandleError.Stale);
            }
            case ModelOpKind.ReleaseWrongCaching:
            {
                if (LiveAt(op) is not { } b) return Skip();
                var wrong = (CachingMode)(((int)b.Caching + 1 + op.B % 2) % 3);
                return ExpectHandleError(() => _pool.Release(_handles[b.Id], wrong), HandleError.Mismatch) ?? Compare(b, "after a refused release");
            }
            case ModelOpKind.ReleaseForeign:
            {
                if (LiveAt(op) is not { } b) return Skip();
                return ExpectHandleError(() => _foreign.Release(_handles[b.Id], b.Caching), HandleError.Foreign) ?? Compare(b, "after a refused release");
            }
            case ModelOpKind.ReleaseTwiceInOneCall:
            {
                if (LiveAt(op) is not { } b) return Skip();
                var h = _handles[b.Id][0];
                return ExpectHandleError(() => _pool.Release([h, h], b.Caching), HandleError.DoubleFree) ?? Compare(b, "after a refused release");
            }
            case ModelOpKind.ReleaseInvalidCaching:
            {
                if (LiveAt(op) is not { } b) return Skip();
                try
                {
                    _pool.Release(_handles[b.Id], (CachingMode)op.B);
                    return $"a release as caching mode {op.B} was accepted";
                }
                catch (ArgumentOutOfRangeException) { _refused = true; }
                catch (PageHandleException) { _refused = true; }
                return Compare(b, "after a refused release");
            }
            case ModelOpKind.SwitchCaching:
            {
                if (LiveAt(op) is not { } b) return Skip();
                _memory.SetCaching(_handles[b.Id], op.Caching);
                b.Caching = op.Caching;
                foreach (var h in _handles[b.Id])
                    if (_memory.CachingOf(h) != op.Caching) return $"{h} is {_memory.CachingOf(h)} after switching to {op.Caching}";
                return Compare(b, $"after switching to {op.Caching}");
            }
            case ModelOpKind.Write:
            {
                if (LiveAt(op) is not { } b) return Skip();
                var handles = _handles[b.Id];
                int j = op.B % handles.Length;
                int size = handles[j].PageCount * PhysicalMemory.PageSize;
                var rng = new Random(op.C);
                int offset = rng.Next(size), length = 1 + rng.Next(Math.Min(size - offset, 3 * PhysicalMemory.PageSize));
                var data = new byte[length];
                rng.NextBytes(data);
                _memory.Write(handles[j], offset, data);
                if (b.Bytes is null)
                {
                    // Bytes of a NoClear buffer are known from its first full write on; a partial one stays unknown.
                    if (handles.Length == 1 && offset == 0 && length == size) b.Bytes = data;
                    return null;
                }
                data.CopyTo(b.Bytes.AsSpan(PagesBefore(handles, j) * PhysicalMemory.PageSize + offset));
                return null;
            }
            case ModelOpKind.Check:
                return LiveAt(op) is { Bytes: not null } live ? Compare(live, "on a check") : Skip();
            case ModelOpKind.Shrink:
            {
                long before = _pool.Count();
                long freed = _pool.Scan(op.A);
                if (freed < Math.Min(op.A, before)) return $"Scan({op.A}) freed {freed} with {before} pooled";
                return null;
            }
            default:
                return $"unknown step {op.Kind}";
        }
    }

    private static int PagesBefore(PageHandle[] handles, int j)
    {
        int pages = 0;
        for (int i = 0; i < j; i++) pages += handles[i].PageCount;
        return pages;
    }

    private string? ExpectHandleError(Action release, params HandleError[] expected)
    {
        try
        {
            release();
            return $"expected {string.Join(" or ", expected)}, the release was accepted";
        }
        catch (PageHandleException e) when (expected.Contains(e.Error))
        {
            _refused = true;
            return null;
        }
        catch (PageHandleException e)
        {
            return $"expected {string.Join(" or ", expected)}, got {e.Error}: {e.Message}";
        }
    }

    private string? Compare(PoolModel.Buffer b, string when)
    {
        if (b.Bytes is not { } expected) return null; // a NoClear buffer not yet fully written: nothing is promised
        int at = 0;
        foreach (var h in _handles[b.Id])
        {
            var actual = _memory.GetSpan(h);
            int diff = actual.CommonPrefixLength(expected.AsSpan(at, actual.Length));
            if (diff != actual.Length)
                return $"buffer {b.Id} ({b.Caching}) differs {when} at byte {at + diff}: {actual[diff]:x2}, model {expected[at + diff]:x2}";
            at += actual.Length;
        }
        return null;
    }

    // After every step: what callers hold agrees with the models per caching mode, every page the system handed
    // out is pooled, held by a caller, resident in an array or a swiotlb page (none lost, none twice), the pool
    // respects its limit, and the arrays, the store, VRAM, the devices' mappings, slots and faults agree with the
    // models. Now and then, the full audit of the pool and of every array's contents.
    private string? CheckAccounting(bool audit)
    {
        foreach (var c in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
        {
            long ttPages = _tts.Live.Where(t => t.Caching == c).Sum(t => t.Resident);
            if (_pool.InUsePages(c) != _model.HeldPages(c) + ttPages)
                return $"the pool counts {_pool.InUsePages(c)} {c} pages in use, the models {_model.HeldPages(c)} in buffers + {ttPages} in arrays";
        }
        long pooled = audit ? _pool.Audit() : _pool.Count();
        long used = (_memory.UsedBytes(Zone.Dma32) + _memory.UsedBytes(Zone.Normal)) / PhysicalMemory.PageSize;
        long resident = _tts.Live.Sum(t => t.Resident), swiotlb = SwiotlbBytes / PhysicalMemory.PageSize;
        long coherent = _dma.CoherentBlocks.Sum(c => (long)c.Bytes.Length) / PhysicalMemory.PageSize;
        long accounted = pooled + _model.HeldPages() + resident + swiotlb + coherent;
        if (used != accounted)
            return $"the system handed out {used} pages; pooled {pooled} + held {_model.HeldPages()} + in arrays {resident} + swiotlb {swiotlb} + coherent {coherent} = {accounted}";
        if (pooled > _limitPages + PoolSlackPages)
            return $"{pooled} pages pooled over a limit of {_limitPages} (+ {PoolSlackPages} per-CPU slack)";
        return CheckArrays(audit) ?? CheckDevices();
    }

    /// <summary>What the pool may keep above its limit in per-CPU magazines: 1 MiB per CPU at most.</summary>
    private static long PoolSlackPages => (long)Environment.ProcessorCount * (1 << 20) / PhysicalMemory.PageSize;

    // The end: destroy every array, undo every mapping, release every buffer, comparing contents on the way; then
    // every page must be accounted for, and the checker must have seen nothing a correct driver does not do.
    private string? Finish()
    {
        _tally.Evictions = _tts.Evictions;
        foreach (var t in _tts.Live.ToList())
        {
            if (CompareArray(t, "at the end") is { } f) return f;
            if (Destroy(t) is { } g) return g;
        }
        foreach (var c in _dma.CoherentBlocks.ToList())
            if ((CompareCoherent(c, 0, c.Bytes.Length, "at the end") ?? FreeCoherent(c)) is { } f) return f;
        foreach (var b in _model.Live.ToList())
        {
            if (UnmapAll(b) is { } f) return f;
            if (b.Bytes is not null && Compare(b, "at the end") is { } g) return g;
            _pool.Release(_handles[b.Id], b.Caching);
            _model.Release(b);
        }
        if (CheckAccounting(audit: true) is { } h) return h;
        _platform.Dispose(); // the checker reports any mapping still pending here
        if (_store.BytesInUse != 0) return $"the store holds {_store.BytesInUse} bytes with no array left";
        return CheckReports();
    }
}
