using System.Runtime.InteropServices;

namespace PagePool.Native;

/// <summary>A libc call failed. Carries the call, the errno and its name, and what to do about it.</summary>
public sealed class NativeCallException : PagePoolException
{
    /// <summary>The libc function that failed ("mmap").</summary>
    public string Operation { get; }

    /// <summary>The errno value the call left.</summary>
    public int Errno { get; }

    /// <summary>The symbolic errno name ("ENOMEM").</summary>
    public string ErrnoName { get; }

    internal NativeCallException(string operation, int errno, string detail, string advice)
        : base($"{operation} failed with {Native.Errno.Name(errno)} ({detail}). {advice}")
    {
        Operation = operation;
        Errno = errno;
        ErrnoName = Native.Errno.Name(errno);
    }

    /// <summary>The failure a <see cref="Faults.FaultInjector"/> fault point stands in for: the errno the real call would leave.</summary>
    internal static NativeCallException Injected(string operation, int errno, string detail)
        => new(operation, errno, detail + ", injected fault", Native.Errno.Advice(operation, errno));

    /// <summary>Build the exception from the errno the last P/Invoke left.</summary>
    internal static NativeCallException FromErrno(string operation, string detail)
    {
        int errno = Marshal.GetLastPInvokeError();
        return new NativeCallException(operation, errno, detail, Native.Errno.Advice(operation, errno));
    }
}
