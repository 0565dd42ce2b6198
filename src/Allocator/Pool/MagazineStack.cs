namespace PagePool.Pool;

/// <summary>
/// A lock-free stack of magazines (Treiber), ABA-safe: the head packs a magazine id with a 32-bit tag that
/// changes on every push and pop, so a head that was popped and pushed back in between no longer compares
/// equal. Magazines are never freed while the pool lives, so reading a stale magazine's link is harmless: the
/// compare-and-swap that would use it fails.
/// </summary>
internal sealed class MagazineStack(MagazineRegistry registry)
{
    private long _head; // (tag << 32) | id; id 0 = empty

    internal void Push(Magazine m)
    {
        var spin = new SpinWait();
        while (true)
        {
            long head = Volatile.Read(ref _head);
            m.NextId = (int)head;
            long next = (((head >>> 32) + 1) << 32) | (uint)m.Id;
            if (Interlocked.CompareExchange(ref _head, next, head) == head) return;
            spin.SpinOnce(-1);
        }
    }

    internal Magazine? Pop()
    {
        var spin = new SpinWait();
        while (true)
        {
            long head = Volatile.Read(ref _head);
            int id = (int)head;
            if (id == 0) return null;
            var m = registry[id];
            long next = (((head >>> 32) + 1) << 32) | (uint)Volatile.Read(ref m.NextId);
            if (Interlocked.CompareExchange(ref _head, next, head) == head) return m;
            spin.SpinOnce(-1);
        }
    }
}
