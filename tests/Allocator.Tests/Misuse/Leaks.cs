namespace PagePool.Allocator.Tests;

/// <summary>What a test can count of the process's kernel resources: open files and arena mappings.</summary>
internal static class Leaks
{
    /// <summary>Open file descriptors of this process.</summary>
    internal static int OpenFiles() => Directory.GetFiles("/proc/self/fd").Length;

    /// <summary>Mappings of arena memfds (two per mapped arena: the view and the cached alias).</summary>
    internal static int ArenaMappings() => File.ReadLines("/proc/self/maps").Count(l => l.Contains("pagepool-arena", StringComparison.Ordinal));
}
