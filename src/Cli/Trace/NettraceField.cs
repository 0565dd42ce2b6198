namespace PagePool.Cli.Trace;

/// <summary>A payload field: its System.TypeCode and name.</summary>
internal readonly record struct NettraceField(int TypeCode, string Name);
