namespace PagePool.Shrinker;

/// <summary>
/// MemAvailable from /proc/meminfo below a watermark: the kernel's own estimate of what it can hand out without
/// swapping. Below the watermark is Medium, below half of it Critical; Low lasts until MemAvailable is back above
/// 1.25 times the watermark (hysteresis), so reclaim does not flap around one number.
/// </summary>
public sealed class MemAvailablePressureSource : PressureSource
{
    private readonly string _meminfo;
    private MemoryPressure _level;

    /// <summary>
    /// Watch <paramref name="meminfoPath"/> against <paramref name="watermarkBytes"/> (default: 5 % of MemTotal,
    /// at least 64 MiB, the order of the kernel's own high watermarks plus headroom).
    /// </summary>
    public MemAvailablePressureSource(string meminfoPath = "/proc/meminfo", long? watermarkBytes = null)
    {
        _meminfo = meminfoPath;
        var text = TryRead(meminfoPath) ?? throw new ArgumentException($"{meminfoPath} cannot be read.", nameof(meminfoPath));
        if (Field(text, "MemAvailable:") is null)
            throw new ArgumentException($"{meminfoPath} has no MemAvailable line.", nameof(meminfoPath));
        WatermarkBytes = watermarkBytes ?? Math.Max(64L << 20, (Field(text, "MemTotal:") ?? 0) / 20);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(WatermarkBytes, nameof(watermarkBytes));
    }

    /// <summary>Below this many bytes available, memory is short.</summary>
    public long WatermarkBytes { get; }

    /// <inheritdoc/>
    public override string Name => "memavailable";

    /// <inheritdoc/>
    public override string Mode => $"MemAvailable in {_meminfo} below {WatermarkBytes >> 20} MiB, read on each tick";

    private protected override MemoryPressure Evaluate(bool fired)
    {
        if (Field(TryRead(_meminfo), "MemAvailable:") is not { } available) return _level = MemoryPressure.None;
        return _level = available switch
        {
            _ when available < WatermarkBytes / 2 => MemoryPressure.Critical,
            _ when available < WatermarkBytes => MemoryPressure.Medium,
            _ when available < WatermarkBytes + WatermarkBytes / 4 && _level != MemoryPressure.None => MemoryPressure.Low,
            _ => MemoryPressure.None,
        };
    }

    internal static long? Field(string? text, string key) => MemoryStatus.MeminfoField(text, key);
}
