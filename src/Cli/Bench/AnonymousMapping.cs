using System.Runtime.InteropServices;

namespace PagePool.Cli.Bench;

/// <summary>mmap and munmap of anonymous memory, called directly: the kernel's own cost of a fresh page.</summary>
internal static unsafe partial class AnonymousMapping
{
    private const int ProtRead = 0x1, ProtWrite = 0x2;
    private const int MapPrivate = 0x02, MapAnonymous = 0x20;

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* addr, nuint length);

    /// <summary>A private read-write anonymous mapping of <paramref name="length"/> bytes (not yet touched).</summary>
    internal static byte* Map(nuint length)
    {
        void* p = Mmap(null, length, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (p == (void*)-1)
            throw new InvalidOperationException($"bench: mmap of {length} anonymous bytes failed (errno {Marshal.GetLastPInvokeError()}).");
        return (byte*)p;
    }

    internal static void Unmap(byte* p, nuint length)
    {
        if (Munmap(p, length) != 0)
            throw new InvalidOperationException($"bench: munmap of {length} bytes at 0x{(nint)p:x} failed (errno {Marshal.GetLastPInvokeError()}).");
    }
}
