namespace PagePool.Cli.Trace;

/// <summary>The file is not a NetTrace stream: no "Nettrace" magic or no FastSerialization header.</summary>
internal sealed class NotANettraceException(string message, long offset) : NettraceFormatException(message, offset);
