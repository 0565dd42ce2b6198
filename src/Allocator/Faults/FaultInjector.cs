using System.Globalization;
using System.Runtime.CompilerServices;

namespace PagePool.Faults;

/// <summary>
/// Named fault points, armed by API or by the <c>PAGEPOOL_FAULTS</c> environment variable, so tests and the AOT
/// binary can make mmap, mprotect, swap I/O, IOVA space and the DMA32 zone fail on a chosen call.
/// </summary>
/// <remarks>
/// <para>Cost when nothing is armed: one load of a static int that is zero, and only on the slow paths that touch
/// the system or run out (a pool hit never passes a fault point). Armed faults live in a small table behind it.</para>
/// <para>Scope: a fault armed for the current thread fires only on calls made by that thread, so tests running in
/// parallel never see each other's faults; a process-wide fault (the environment variable, or
/// <see cref="FaultScope.Process"/>) fires on any thread.</para>
/// <para>Environment: <c>PAGEPOOL_FAULTS=point[@skip][xcount],...</c>, for example <c>mprotect@100x1,swapwrite</c>:
/// the 101st mprotect fails once, and the first swap write fails once. Point names are the
/// <see cref="FaultPoint"/> names, case-insensitive. Read once, when the first fault point is consulted.</para>
/// </remarks>
public static class FaultInjector
{
    /// <summary>The environment variable read at start: <c>point[@skip][xcount],...</c>.</summary>
    public const string EnvironmentVariable = "PAGEPOOL_FAULTS";

    private static readonly int Points = Enum.GetValues<FaultPoint>().Length;

    // Non-zero while any fault is armed in any scope: the only thing a fault point reads when none is.
    private static int s_armed;
    private static readonly Arming?[] s_process = new Arming?[Points];
    private static readonly long[] s_injected = new long[Points];
    [ThreadStatic] private static Arming?[]? t_thread;
    // Last, so the tables above exist when the environment arms them.
    private static readonly string? s_environmentError = ArmFromEnvironment();

    private sealed class Arming(int skip, int count)
    {
        internal int Skip = skip, Remaining = count;
    }

    private static string? ArmFromEnvironment()
    {
        var spec = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (string.IsNullOrWhiteSpace(spec)) return null;
        try
        {
            foreach (var (point, skip, count) in Parse(spec)) Arm(point, skip, count, FaultScope.Process);
            return null;
        }
        catch (FormatException e)
        {
            return e.Message; // nothing armed: a tool reports this at start (EnvironmentError) instead of running unfaulted unknowingly
        }
    }

    /// <summary>
    /// Why <see cref="EnvironmentVariable"/> could not be used (null when it is unset or valid). Nothing from a bad
    /// specification is armed; a tool should report this and stop.
    /// </summary>
    public static string? EnvironmentError => s_environmentError;

    /// <summary>
    /// Make <paramref name="point"/> fail: the calls after the first <paramref name="skip"/> fail,
    /// <paramref name="count"/> times (int.MaxValue: until disarmed). Arming a point again replaces its arming in
    /// that scope.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">An unknown point or scope, a negative skip, or a count below 1.</exception>
    public static void Arm(FaultPoint point, int skip = 0, int count = 1, FaultScope scope = FaultScope.CurrentThread)
    {
        Check(point);
        ArgumentOutOfRangeException.ThrowIfNegative(skip);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var arming = new Arming(skip, count);
        switch (scope)
        {
            case FaultScope.CurrentThread:
                var table = t_thread ??= new Arming?[Points];
                if (Interlocked.Exchange(ref table[(int)point], arming) is null) Interlocked.Increment(ref s_armed);
                break;
            case FaultScope.Process:
                if (Interlocked.Exchange(ref s_process[(int)point], arming) is null) Interlocked.Increment(ref s_armed);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(scope), scope, "Scope must be CurrentThread or Process.");
        }
    }

    /// <summary>Disarm <paramref name="point"/> in the current thread's scope and the process scope.</summary>
    public static void Disarm(FaultPoint point)
    {
        Check(point);
        if (t_thread is { } table && Interlocked.Exchange(ref table[(int)point], null) is not null) Interlocked.Decrement(ref s_armed);
        if (Interlocked.Exchange(ref s_process[(int)point], null) is not null) Interlocked.Decrement(ref s_armed);
    }

    /// <summary>Disarm every point in the current thread's scope and the process scope.</summary>
    public static void DisarmAll()
    {
        foreach (var p in Enum.GetValues<FaultPoint>()) Disarm(p);
    }

    /// <summary>How many failures were injected at <paramref name="point"/> in this process, on any thread.</summary>
    public static long Injected(FaultPoint point)
    {
        Check(point);
        return Volatile.Read(ref s_injected[(int)point]);
    }

    /// <summary>True when this call at <paramref name="point"/> must fail. Free while nothing is armed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool ShouldFail(FaultPoint point) => Volatile.Read(ref s_armed) != 0 && Consult(point);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool Consult(FaultPoint point)
    {
        var table = t_thread;
        if (!(table is not null && Fires(ref table[(int)point])) && !Fires(ref s_process[(int)point]))
            return false;
        Interlocked.Increment(ref s_injected[(int)point]);
        return true;
    }

    // One call at an armed point: skip it, or fire and count down; the last firing disarms the point.
    private static bool Fires(ref Arming? slot)
    {
        var a = Volatile.Read(ref slot);
        if (a is null) return false;
        lock (a)
        {
            if (a.Remaining == 0) return false;
            if (a.Skip > 0) { a.Skip--; return false; }
            if (a.Remaining != int.MaxValue && --a.Remaining == 0
                && Interlocked.CompareExchange(ref slot, null, a) == a)
                Interlocked.Decrement(ref s_armed);
            return true;
        }
    }

    /// <summary>
    /// Parse <c>point[@skip][xcount],...</c>. Throws <see cref="FormatException"/> naming the bad entry.
    /// </summary>
    public static IReadOnlyList<(FaultPoint Point, int Skip, int Count)> Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var list = new List<(FaultPoint, int, int)>();
        foreach (var raw in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string name = raw;
            int skip = 0, count = 1;
            int x = name.IndexOf('x', StringComparison.Ordinal);
            if (x >= 0)
            {
                if (!int.TryParse(name[(x + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out count) || count < 1)
                    throw new FormatException($"{EnvironmentVariable}: '{raw}' has a bad count; write point[@skip][xcount] with count >= 1.");
                name = name[..x];
            }
            int at = name.IndexOf('@', StringComparison.Ordinal);
            if (at >= 0)
            {
                if (!int.TryParse(name[(at + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out skip))
                    throw new FormatException($"{EnvironmentVariable}: '{raw}' has a bad skip; write point[@skip][xcount] with skip >= 0.");
                name = name[..at];
            }
            if (!Enum.TryParse<FaultPoint>(name, ignoreCase: true, out var point) || !Enum.IsDefined(point) || int.TryParse(name, out _))
                throw new FormatException($"{EnvironmentVariable}: unknown fault point '{name}'; known: {string.Join(", ", Enum.GetNames<FaultPoint>()).ToLowerInvariant()}.");
            list.Add((point, skip, count));
        }
        return list;
    }

    private static void Check(FaultPoint point)
    {
        if ((uint)point >= (uint)Points)
            throw new ArgumentOutOfRangeException(nameof(point), point, "Unknown fault point.");
    }
}
