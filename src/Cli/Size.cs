using System.Globalization;

namespace PagePool.Cli;

/// <summary>Byte sizes for humans, and parsing of sizes from the command line ("64M", "2G", "4096").</summary>
internal static class Size
{
    internal static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.##} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.##} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.##} KiB",
        _ => $"{bytes} B",
    };

    /// <summary>Parse "123", "64K", "64M", "2G" (binary units, optional trailing B or iB); false on anything else.</summary>
    internal static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var s = text.Trim().ToUpperInvariant();
        if (s.EndsWith("IB", StringComparison.Ordinal)) s = s[..^2];
        else if (s.EndsWith('B')) s = s[..^1];
        long mult = 1;
        if (s.Length > 0 && "KMGT".Contains(s[^1]))
        {
            mult = s[^1] switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1L << 40 };
            s = s[..^1];
        }
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || v < 0 || double.IsNaN(v))
            return false;
        bytes = (long)(v * mult);
        return true;
    }
}
