using System.Runtime.InteropServices;

namespace PagePool.Pool;

/// <summary>128 bytes of nothing (two lines: the adjacent-line prefetcher pulls pairs), to keep hot fields apart.</summary>
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal struct CacheLine
{
    internal const int Ulongs = 128 / sizeof(ulong);
}
