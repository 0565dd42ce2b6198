namespace PagePool.Shrinker.Tests;

/// <summary>A shrinker holding a number of objects; Scan frees what it is asked for, up to what it holds.</summary>
internal sealed class FakeShrinker(string name, long held) : IShrinker
{
    private long _held = held;
    public long Asked, Calls;
    public Action? OnScan;

    public string Name => name;
    public long Held => Volatile.Read(ref _held);
    public long Count() => Held == 0 ? IShrinker.Empty : Held;

    public long Scan(long toScan)
    {
        OnScan?.Invoke();
        Interlocked.Add(ref Asked, toScan);
        Interlocked.Increment(ref Calls);
        long n = Math.Min(toScan, Held);
        Interlocked.Add(ref _held, -n);
        return n;
    }
}

/// <summary>Records what the registry and the thread report.</summary>
internal sealed class RecordingObserver : IReclaimObserver
{
    public readonly System.Collections.Concurrent.ConcurrentQueue<string> Lines = new();
    public void PressureChanged(string source, MemoryPressure level) => Lines.Enqueue($"pressure {source} {level}");
    public void ReclaimPass(MemoryPressure level, int priority, long freed, long nanoseconds) => Lines.Enqueue($"pass {level} {priority} {freed}");
    public void ShrinkerScanned(string shrinker, long asked, long freed) => Lines.Enqueue($"scanned {shrinker} {asked} {freed}");
    public void ShrinkerFailed(string shrinker, Exception error) => Lines.Enqueue($"failed {shrinker} {error.Message}");
}
