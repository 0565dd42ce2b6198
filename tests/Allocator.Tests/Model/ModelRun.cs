using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// Runs a sequence of steps against a fresh memory space and pool and against <see cref="PoolModel"/>, step by
/// step, and returns the first disagreement (null when there is none). Every step is checked: results, contents,
/// the errors of illegal steps (and that an illegal step changed nothing), and the accounting after it.
/// </summary>
public sealed class ModelRun : IDisposable
{
    private const int AuditEvery = 32;
    private static readonly MemoryOptions Space = new() { ArenaBytes = 8L << 20, Dma32Bytes = 64L << 20, NormalBytes = 256L << 20 };

    private readonly PhysicalMemory _memory = new(Space);
    private readonly PoolAllocator _pool, _foreign;
    private readonly PoolModel _model = new();
    private readonly Dictionary<int, PageHandle[]> _handles = new();
    private readonly List<PageHandle[]> _released = new();
    private readonly long _limitPages;

    public ModelRun(long limitBytes)
    {
        _pool = new PoolAllocator(_memory, new PoolOptions { LimitBytes = limitBytes });
        _foreign = new PoolAllocator(_memory);
        _limitPages = limitBytes / PhysicalMemory.PageSize;
    }

    public void Dispose()
    {
        _foreign.Dispose();
        _pool.Dispose();
        _memory.Dispose();
    }

    /// <summary>Run every step; the first disagreement as "step N (op): what differed", or null.</summary>
    public static string? Execute(IReadOnlyList<ModelOp> ops, long limitBytes) => Execute(ops, limitBytes, out _);

    /// <summary>As <see cref="Execute(IReadOnlyList{ModelOp}, long)"/>, with the index of the failing step (the count when the end failed).</summary>
    public static string? Execute(IReadOnlyList<ModelOp> ops, long limitBytes, out int failedStep)
    {
        failedStep = -1;
        using var run = new ModelRun(limitBytes);
        for (int i = 0; i < ops.Count; i++)
        {
            string? failure;
            try
            {
                failure = run.Step(ops[i]) ?? run.CheckAccounting(audit: i % AuditEvery == AuditEvery - 1);
            }
            catch (Exception e)
            {
                failure = $"unexpected {e.GetType().Name}: {e.Message}";
            }
            if (failure is not null)
            {
                failedStep = i;
                return $"step {i} ({ops[i]}): {failure}";
            }
        }
        failedStep = ops.Count;
        return run.Finish();
    }

    private PoolModel.Buffer? LiveAt(int k) => _model.Live.Count == 0 ? null : _model.Live[k % _model.Live.Count];

    private string? Step(ModelOp op)
    {
        switch (op.Kind)
        {
            case ModelOpKind.Allocate:
            {
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
                var b = _model.Allocate(op.Caching, op.Zone, op.A, op.B != 0);
                _handles[b.Id] = handles;
                return b.Bytes is null ? null : Compare(b, "as handed out");
            }
            case ModelOpKind.Release:
            {
                if (LiveAt(op.A) is not { } b) return null;
                var handles = _handles[b.Id];
                _pool.Release(handles, b.Caching);
                _model.Release(b);
                _handles.Remove(b.Id);
                _released.Add(handles);
                return null;
            }
            case ModelOpKind.ReleaseStale:
            {
                if (_released.Count == 0) return null;
                var handles = _released[op.A % _released.Count];
                return ExpectHandleError(() => _pool.Release(handles, _memory.CachingOf(handles[0]) is var c ? c : default),
                    HandleError.DoubleFree, HandleError.Stale);
            }
            case ModelOpKind.ReleaseWrongCaching:
            {
                if (LiveAt(op.A) is not { } b) return null;
                var wrong = (CachingMode)(((int)b.Caching + 1 + op.B % 2) % 3);
                return ExpectHandleError(() => _pool.Release(_handles[b.Id], wrong), HandleError.Mismatch) ?? Compare(b, "after a refused release");
            }
            case ModelOpKind.ReleaseForeign:
            {
                if (LiveAt(op.A) is not { } b) return null;
                return ExpectHandleError(() => _foreign.Release(_handles[b.Id], b.Caching), HandleError.Foreign) ?? Compare(b, "after a refused release");
            }
            case ModelOpKind.ReleaseTwiceInOneCall:
            {
                if (LiveAt(op.A) is not { } b) return null;
                var h = _handles[b.Id][0];
                return ExpectHandleError(() => _pool.Release([h, h], b.Caching), HandleError.DoubleFree) ?? Compare(b, "after a refused release");
            }
            case ModelOpKind.ReleaseInvalidCaching:
            {
                if (LiveAt(op.A) is not { } b) return null;
                try
                {
                    _pool.Release(_handles[b.Id], (CachingMode)op.B);
                    return $"a release as caching mode {op.B} was accepted";
                }
                catch (ArgumentOutOfRangeException) { }
                catch (PageHandleException) { }
                return Compare(b, "after a refused release");
            }
            case ModelOpKind.SwitchCaching:
            {
                if (LiveAt(op.A) is not { } b) return null;
                _memory.SetCaching(_handles[b.Id], op.Caching);
                b.Caching = op.Caching;
                foreach (var h in _handles[b.Id])
                    if (_memory.CachingOf(h) != op.Caching) return $"{h} is {_memory.CachingOf(h)} after switching to {op.Caching}";
                return Compare(b, $"after switching to {op.Caching}");
            }
            case ModelOpKind.Write:
            {
                if (LiveAt(op.A) is not { } b) return null;
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
                return LiveAt(op.A) is { Bytes: not null } live ? Compare(live, "on a check") : null;
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

    private static string? ExpectHandleError(Action release, params HandleError[] expected)
    {
        try
        {
            release();
            return $"expected {string.Join(" or ", expected)}, the release was accepted";
        }
        catch (PageHandleException e) when (expected.Contains(e.Error))
        {
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

    // After every step: what callers hold agrees with the model per caching mode, every page the system handed
    // out is pooled or held (none lost, none twice), and the pool respects its limit. Now and then, the full audit.
    private string? CheckAccounting(bool audit)
    {
        foreach (var c in new[] { CachingMode.WriteBack, CachingMode.WriteCombined, CachingMode.Uncached })
            if (_pool.InUsePages(c) != _model.HeldPages(c))
                return $"the pool counts {_pool.InUsePages(c)} {c} pages in use, the model {_model.HeldPages(c)}";
        long pooled = audit ? _pool.Audit() : _pool.Count();
        long used = (_memory.UsedBytes(Zone.Dma32) + _memory.UsedBytes(Zone.Normal)) / PhysicalMemory.PageSize;
        if (used != pooled + _model.HeldPages())
            return $"the system handed out {used} pages; pooled {pooled} + held {_model.HeldPages()} = {pooled + _model.HeldPages()}";
        if (pooled > _limitPages + PoolSlackPages)
            return $"{pooled} pages pooled over a limit of {_limitPages} (+ {PoolSlackPages} per-CPU slack)";
        return null;
    }

    /// <summary>What the pool may keep above its limit in per-CPU magazines: 1 MiB per CPU at most.</summary>
    private static long PoolSlackPages => (long)Environment.ProcessorCount * (1 << 20) / PhysicalMemory.PageSize;

    // The end: release everything the model holds; the pool must then account for every page it was given.
    private string? Finish()
    {
        foreach (var b in _model.Live.ToList())
        {
            if (b.Bytes is not null && Compare(b, "at the end") is { } f) return f;
            _pool.Release(_handles[b.Id], b.Caching);
            _model.Release(b);
        }
        return CheckAccounting(audit: true);
    }
}
