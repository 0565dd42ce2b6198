namespace PagePool.Cli.Trace;

/// <summary>What a metadata record says about one kind of event.</summary>
internal sealed record EventMetadata(int Id, string Provider, int EventId, string Name, NettraceField[]? Fields);
