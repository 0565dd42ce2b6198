namespace PagePool.Cli.Bench;

/// <summary>A bench result file that is missing or is not what <c>pagepool bench --json</c> writes.</summary>
internal sealed class BenchResultsException(string message, Exception? inner = null) : Exception(message, inner);
