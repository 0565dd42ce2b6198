namespace PagePool.Cli.Trace;

/// <summary>
/// A file the trace reader could not read to its end. Two kinds, told apart by type:
/// <see cref="NotANettraceException"/> (the file is not a NetTrace stream at all: its magic or serialization
/// header is wrong; `pagepool trace --read` exits 2, a usage error) and <see cref="DamagedNettraceException"/> (it
/// starts as a NetTrace stream but is cut short or corrupt further on; exit 1). Both carry the byte offset where
/// reading stopped.
/// </summary>
internal abstract class NettraceFormatException(string message, long offset)
    : Exception($"{message} (at byte {offset:N0})")
{
    /// <summary>The offset in the file of the byte where reading stopped.</summary>
    internal long Offset { get; } = offset;
}
