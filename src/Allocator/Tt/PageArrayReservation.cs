namespace PagePool.Tt;

/// <summary>
/// A hold on a <see cref="PageArray"/> (TTM's ttm_bo_reserve): until disposed, no other thread changes the array and
/// reclaim skips it, so a populate followed by reads and writes sees the pages stay. Calls on the array from the
/// holding thread work as usual.
/// </summary>
public readonly struct PageArrayReservation : IDisposable
{
    private readonly PageArray? _array;

    internal PageArrayReservation(PageArray array) => _array = array;

    /// <summary>Let go of the array.</summary>
    public void Dispose() => _array?.Gate.Exit();
}
