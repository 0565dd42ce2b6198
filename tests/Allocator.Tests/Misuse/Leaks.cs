namespace PagePool.Allocator.Tests;

/// <summary>
/// What a test can count of the kernel resources the library holds: its memfds and their mappings. Only these are
/// counted: the test host and the runtime open and close descriptors of their own at any time.
/// </summary>
internal static class Leaks
{
    private const string ArenaName = "memfd:pagepool-arena";

    /// <summary>Open file descriptors of arena memfds in this process.</summary>
    internal static int OpenFiles()
    {
        int n = 0;
        foreach (var fd in Directory.GetFiles("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && target.Contains(ArenaName, StringComparison.Ordinal)) n++;
            }
            catch (IOException) { } // closed while listed
        }
        return n;
    }

    /// <summary>Mappings of arena memfds (two per mapped arena: the view and the cached alias).</summary>
    internal static int ArenaMappings() => File.ReadLines("/proc/self/maps").Count(l => l.Contains(ArenaName, StringComparison.Ordinal));
}
