using System.Runtime.InteropServices;

namespace PagePool.Native;

/// <summary>One entry of a gather/scatter list (struct iovec).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVec
{
    internal byte* Base;
    internal nuint Length;
}
