using System.Runtime.InteropServices;
using System.Text;

namespace PagePool.Cli;

/// <summary>
/// Results written to a file: the path is checked before a run (so a bad path costs nothing), the content goes to
/// a temporary file in the same folder and is renamed over the target only when complete, so a reader never sees
/// half a file and a failed write leaves the old one. "-" means standard output.
/// </summary>
internal sealed class OutputFile : IDisposable
{
    internal const string StandardOutput = "-";
    private const int NameMax = 255; // NAME_MAX: bytes of one path component

    private readonly string? _target;
    private readonly string? _temp;
    private readonly TextWriter? _stdout;
    private bool _committed;

    /// <summary>Where to write the content.</summary>
    internal Stream Stream { get; }

    private OutputFile(string path, TextWriter stdout)
    {
        if (path == StandardOutput)
        {
            _stdout = stdout;
            Stream = new MemoryStream();
            return;
        }
        _target = Path.GetFullPath(path);
        _temp = Path.Combine(Path.GetDirectoryName(_target)!, $".{Path.GetFileName(_target)}.{Environment.ProcessId}.tmp");
        if (Encoding.UTF8.GetByteCount(Path.GetFileName(_temp)) > NameMax)
            _temp = Path.Combine(Path.GetDirectoryName(_target)!, $".pagepool.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        Stream = new FileStream(_temp, FileMode.Create, FileAccess.Write, FileShare.None);
    }

    /// <summary>Start writing <paramref name="path"/> ("-": <paramref name="stdout"/>).</summary>
    internal static OutputFile Create(string path, TextWriter stdout) => new(path, stdout);

    /// <summary>Everything is written: flush it to disk and put it in place.</summary>
    internal void Commit()
    {
        if (_stdout is not null)
        {
            _stdout.Write(Encoding.UTF8.GetString(((MemoryStream)Stream).ToArray()));
            _stdout.Flush();
        }
        else
        {
            ((FileStream)Stream).Flush(flushToDisk: true);
            Stream.Dispose();
            File.Move(_temp!, _target!, overwrite: true);
        }
        _committed = true;
    }

    /// <summary>Without a commit, the temporary file is removed and the target is untouched.</summary>
    public void Dispose()
    {
        Stream.Dispose();
        if (!_committed && _temp is not null)
        {
            try { File.Delete(_temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Why <paramref name="path"/> cannot be written, or null when it can (its folder takes a new file).</summary>
    internal static string? Problem(string path)
    {
        if (path.Length == 0) return "the name is empty";
        if (path.Contains('\0')) return "the name holds a NUL character";
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or PathTooLongException or NotSupportedException) { return e.Message; }
        string name = Path.GetFileName(full);
        if (name.Length == 0 || Directory.Exists(full)) return "it is a folder";
        if (Encoding.UTF8.GetByteCount(name) > NameMax) return $"the file name is {Encoding.UTF8.GetByteCount(name)} bytes, more than the {NameMax} a name may have";
        string dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) return $"there is no folder '{Arguments.Shorten(dir)}'";
        if (File.Exists(full) && !IsRegularFile(full)) return "it is not a regular file (a device, pipe or socket); use - for standard output";
        // Try what the run will do at the end: create a file in that folder.
        string probe = Path.Combine(dir, $".pagepool-probe.{Environment.ProcessId}.{Guid.NewGuid():N}");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write)) { }
            File.Delete(probe);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"the folder takes no new file ({e.Message.TrimEnd('.')})";
        }
    }

    /// <summary>Whether <paramref name="path"/> (links followed) is a regular file.</summary>
    internal static bool IsRegularFile(string path)
    {
        byte[] name = Encoding.UTF8.GetBytes(path + "\0");
        Span<byte> st = stackalloc byte[256]; // struct stat is 144 bytes on x86-64 Linux
        if (Stat(ref name[0], ref MemoryMarshal.GetReference(st)) != 0) return false;
        uint mode = MemoryMarshal.Read<uint>(st[24..]); // st_mode follows st_dev, st_ino, st_nlink (8 bytes each)
        return (mode & 0xF000) == 0x8000;               // S_IFMT == S_IFREG
    }

    [DllImport("libc", EntryPoint = "stat")]
    private static extern int Stat(ref byte path, ref byte buffer);
}
