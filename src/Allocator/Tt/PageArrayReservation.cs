namespace PagePool.Tt;

/// <summary>
/// A reservation of a <see cref="PageArray"/> (TTM's ttm_bo_reserve): until disposed, other reservations of the array
/// wait and reclaim skips it. A token, not a thread's lock: it may be disposed on any thread; disposing it twice (or a
/// copy of it) releases once.
/// </summary>
public readonly struct PageArrayReservation : IDisposable
{
    private readonly PageArray? _array;
    private readonly object? _ticket;

    internal PageArrayReservation(PageArray array, object ticket)
    {
        _array = array;
        _ticket = ticket;
    }

    /// <summary>Let go of the array.</summary>
    public void Dispose()
    {
        if (_array is not null) _array.Unreserve(_ticket!);
    }
}
