namespace PagePool.Tt;

/// <summary>An operation was asked of a <see cref="PageArray"/> in a state that does not allow it; nothing changed.</summary>
public sealed class TtStateException : PagePoolException
{
    /// <summary>The operation refused ("bind").</summary>
    public string Operation { get; }

    /// <summary>The state the array was in.</summary>
    public TtState State { get; }

    internal TtStateException(string operation, TtState state, string advice)
        : base($"Cannot {operation} a buffer that is {Describe(state)}: {advice}")
    {
        Operation = operation;
        State = state;
    }

    private static string Describe(TtState s) => s switch
    {
        TtState.Unpopulated => "unpopulated",
        TtState.Populated => "populated",
        TtState.Bound => "bound to a device",
        TtState.DeviceLocal => "in device-local memory",
        _ => "swapped out",
    };
}
