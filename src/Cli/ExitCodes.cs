using PagePool.Dma;
using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Cli;

/// <summary>The process exit codes of pagepool (the README lists them).</summary>
internal static class ExitCodes
{
    internal const int Ok = 0;
    /// <summary>A run failed: verification, a broken invariant, an error from the library, a damaged trace.</summary>
    internal const int Failed = 1;
    /// <summary>The arguments were wrong (or name a file, process or path that is not usable); nothing ran.</summary>
    internal const int BadArguments = 2;
    /// <summary>The machine ran out of a resource: memory, address space, threads (ENOMEM, EAGAIN, OutOfMemoryException), or a simulated one (IOVA space, swiotlb slots, a zone).</summary>
    internal const int ResourceExhausted = 3;
    /// <summary>gate: the two bench results were measured on different kinds of machine, so their ratios do not compare.</summary>
    internal const int OtherMachine = 4;

    /// <summary>Whether an exception means the machine or the process limits ran out, not that the code is wrong.</summary>
    internal static bool IsResourceExhaustion(Exception e) => e switch
    {
        OutOfMemoryException or InsufficientExecutionStackException => true,
        // Simulated resources running out under load: IOVA space, bounce slots, a zone. Not a mask that leaves no
        // IOVA space for the mapping at all: that is the device's configuration, not exhaustion.
        IovaSpaceExhaustedException iova => iova.SpacePages >= iova.Pages,
        SwiotlbFullException or ZoneExhaustedException => true,
        NativeCallException n => n.ErrnoName is "ENOMEM" or "EAGAIN" or "ENOSPC" or "EMFILE" or "ENFILE",
        _ => e.InnerException is { } inner && IsResourceExhaustion(inner),
    };
}
