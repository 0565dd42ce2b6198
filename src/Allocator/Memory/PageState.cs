namespace PagePool.Memory;

/// <summary>
/// Who holds a block: the system (free), a pool (pooled), a caller (allocated), or one thread in the middle of
/// changing its caching or giving it back (busy: any other use of the block is refused until it is done).
/// </summary>
internal enum PageState : byte { Free = 0, Pooled = 1, Allocated = 2, Busy = 3 }
