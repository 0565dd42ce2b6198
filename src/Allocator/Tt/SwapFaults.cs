namespace PagePool.Tt;

/// <summary>
/// Fault injection for a swap store, as TTM's pool has its test hooks: make the next writes or reads fail so the
/// recovery paths (a buffer keeping its pages, a restore that resumes) can be exercised on purpose.
/// </summary>
public sealed class SwapFaults
{
    private int _failWrites, _failReads, _readsBeforeFault;

    /// <summary>Make the next <paramref name="count"/> store writes fail with <see cref="SwapStoreException"/>.</summary>
    public void FailWrites(int count) => Volatile.Write(ref _failWrites, Math.Max(0, count));

    /// <summary>
    /// Let <paramref name="after"/> store reads succeed, then make the next <paramref name="count"/> fail with
    /// <see cref="SwapStoreException"/>: a restore interrupted part way.
    /// </summary>
    public void FailReads(int count, int after = 0)
    {
        Volatile.Write(ref _readsBeforeFault, Math.Max(0, after));
        Volatile.Write(ref _failReads, Math.Max(0, count));
    }

    internal bool TakeWriteFault() => Take(ref _failWrites);

    internal bool TakeReadFault()
    {
        if (Volatile.Read(ref _failReads) == 0) return false;
        return !Take(ref _readsBeforeFault) && Take(ref _failReads);
    }

    private static bool Take(ref int counter)
    {
        int n;
        do
        {
            n = Volatile.Read(ref counter);
            if (n == 0) return false;
        } while (Interlocked.CompareExchange(ref counter, n - 1, n) != n);
        return true;
    }
}
