namespace PagePool.Cli.Stress;

/// <summary>A DMA misuse `stress dma --inject` commits once, which the checker must report.</summary>
internal enum DmaInjection
{
    /// <summary>Nothing injected.</summary>
    None,
    /// <summary>The CPU reads a bounced buffer the device wrote, without sync_for_cpu.</summary>
    MissingSync,
    /// <summary>A device writes through an IOTLB entry left stale by a deferred unmap.</summary>
    StaleIotlb,
    /// <summary>A DMA-pool page is given to another device's pool.</summary>
    WrongPool,
}

/// <summary>The --inject names of <see cref="DmaInjection"/>: the one table the command line and the JSON read.</summary>
internal static class DmaInjections
{
    /// <summary>The names, in the enum's order after <see cref="DmaInjection.None"/>.</summary>
    internal static readonly string[] Names = ["missing-sync", "stale-iotlb", "wrong-pool"];

    /// <summary>The injection a name asks for; None for null or a name of another scenario's fault.</summary>
    internal static DmaInjection Parse(string? name) => (DmaInjection)(Array.IndexOf(Names, name) + 1);

    /// <summary>The name of an injection, null for None.</summary>
    internal static string? Name(DmaInjection inject) => inject == DmaInjection.None ? null : Names[(int)inject - 1];
}
