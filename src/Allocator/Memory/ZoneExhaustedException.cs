namespace PagePool.Memory;

/// <summary>A zone has no free block of the order asked for and cannot grow within its capacity.</summary>
public sealed class ZoneExhaustedException : PagePoolException
{
    /// <summary>The zone that ran out.</summary>
    public Zone Zone { get; }

    /// <summary>The order that could not be satisfied.</summary>
    public int Order { get; }

    internal ZoneExhaustedException(Zone zone, int order, long capacityBytes)
        : base($"The {zone} zone has no free block of order {order} and is at its capacity of {capacityBytes >> 20} MiB. " +
               "Free pages, shrink the pools, or configure a larger zone capacity.")
    {
        Zone = zone;
        Order = order;
    }
}
