namespace PagePool.Cli.Trace;

/// <summary>A NetTrace stream that is cut short or corrupt after its header; events before the damage were read.</summary>
internal sealed class DamagedNettraceException(string message, long offset) : NettraceFormatException(message, offset);
