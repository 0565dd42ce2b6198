namespace PagePool.Cli.Trace;

/// <summary>One event: its metadata, when it happened (seconds from the trace start) and its decoded payload.</summary>
internal sealed record NettraceEvent(EventMetadata Metadata, double Seconds, object?[]? Payload)
{
    /// <summary>The payload field of that name, or null.</summary>
    internal object? Field(string name)
    {
        var fields = Metadata.Fields;
        if (fields is null || Payload is null) return null;
        for (int i = 0; i < fields.Length && i < Payload.Length; i++)
            if (fields[i].Name == name) return Payload[i];
        return null;
    }
}
