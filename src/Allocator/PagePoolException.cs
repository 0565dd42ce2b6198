namespace PagePool;

/// <summary>The base of every error PagePool raises on purpose. Catch this to handle them all.</summary>
public class PagePoolException : Exception
{
    /// <summary>An error with a message that names the problem and what to do.</summary>
    public PagePoolException(string message) : base(message) { }

    /// <summary>An error caused by another.</summary>
    public PagePoolException(string message, Exception inner) : base(message, inner) { }
}
