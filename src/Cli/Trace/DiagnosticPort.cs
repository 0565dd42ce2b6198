namespace PagePool.Cli.Trace;

/// <summary>
/// Finds a .NET process's diagnostic socket by scanning the temp folder for dotnet-diagnostic-{pid}-*-socket,
/// as the runtime names it. (DiagnosticsClient.GetPublishedProcesses reads every /proc/N/environ and throws on
/// machines where some of those are unreadable, so it is never used.) A socket may be stale: a crashed process
/// leaves its socket behind, so a found socket does not prove that anyone answers on it.
/// </summary>
internal static class DiagnosticPort
{
    /// <summary>Where the runtime puts its sockets: $TMPDIR, else the temp folder.</summary>
    internal static string Folder => Environment.GetEnvironmentVariable("TMPDIR") is { Length: > 0 } t ? t : Path.GetTempPath();

    internal static string? Find(int pid)
    {
        try
        {
            return Directory.GetFiles(Folder, $"dotnet-diagnostic-{pid}-*-socket")
                .OrderByDescending(File.GetLastWriteTimeUtc).FirstOrDefault();
        }
        catch (DirectoryNotFoundException)
        {
            return null;
        }
    }

    /// <summary>Wait for a starting process to open its diagnostic socket.</summary>
    internal static bool WaitFor(int pid, TimeSpan timeout, Func<bool> stillRunning)
    {
        var until = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < until && stillRunning())
        {
            if (Find(pid) is not null) return true;
            Thread.Sleep(5);
        }
        return Find(pid) is not null;
    }
}
