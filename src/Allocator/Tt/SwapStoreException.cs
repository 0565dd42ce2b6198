namespace PagePool.Tt;

/// <summary>
/// The swap store could not write or read a buffer's pages (a full disk, an I/O error, an injected fault). A
/// failed swap-out leaves the buffer with all its pages; a failed restore leaves the pages not yet read in the store,
/// and the next populate resumes from there.
/// </summary>
public sealed class SwapStoreException : PagePoolException
{
    /// <summary>"write" or "read".</summary>
    public string Operation { get; }

    /// <summary>Bytes the failed call tried to move.</summary>
    public long Bytes { get; }

    /// <summary>An error of the store at <paramref name="store"/> moving <paramref name="bytes"/> bytes.</summary>
    public SwapStoreException(string operation, long bytes, string store, string reason, Exception? inner = null)
        : base($"Swap {operation} of {bytes} bytes to {store} failed: {reason}", inner ?? new IOException(reason))
    {
        Operation = operation;
        Bytes = bytes;
    }
}
