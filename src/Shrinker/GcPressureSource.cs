namespace PagePool.Shrinker;

/// <summary>
/// The GC's view of memory, taken after each full (gen 2) collection, as SharedArrayPool trims on its Gen2
/// callback: when <see cref="GCMemoryInfo.MemoryLoadBytes"/> reaches <see cref="GCMemoryInfo.HighMemoryLoadThresholdBytes"/>
/// (90 % of what the GC may use by default, the container limit included) the level is Medium, and Critical
/// from 97 %. Between collections nothing new is known, so the level seen after the last one stands.
/// </summary>
public sealed class GcPressureSource : PressureSource
{
    private readonly Func<(int Gen2Count, long LoadBytes, long HighLoadBytes, long TotalBytes)> _read;
    private int _lastGen2 = -1;
    private MemoryPressure _level;

    /// <summary>Watch this process's GC.</summary>
    public GcPressureSource() : this(ReadGc) { }

    /// <summary>For tests: a fake GC (gen 2 collection count, memory load, high load threshold, total available).</summary>
    internal GcPressureSource(Func<(int Gen2Count, long LoadBytes, long HighLoadBytes, long TotalBytes)> read) => _read = read;

    /// <inheritdoc/>
    public override string Name => "gc";

    /// <inheritdoc/>
    public override string Mode => "GC memory load after each gen 2 collection (GC.GetGCMemoryInfo)";

    private protected override MemoryPressure Evaluate(bool fired)
    {
        var (gen2, load, high, total) = _read();
        if (gen2 == _lastGen2) return _level;
        _lastGen2 = gen2;
        if (high <= 0) return _level = MemoryPressure.None;
        return _level = load >= high + (total - high) * 7 / 10 ? MemoryPressure.Critical
            : load >= high ? MemoryPressure.Medium
            : MemoryPressure.None;
    }

    private static (int, long, long, long) ReadGc()
    {
        var info = GC.GetGCMemoryInfo(GCKind.Any);
        return (GC.CollectionCount(2), info.MemoryLoadBytes, info.HighMemoryLoadThresholdBytes, info.TotalAvailableMemoryBytes);
    }
}
