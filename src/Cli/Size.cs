using System.Globalization;

namespace PagePool.Cli;

/// <summary>Byte sizes for humans, and parsing of sizes from the command line ("64M", "2G", "4096").</summary>
internal static class Size
{
    private static readonly string[] Units = ["B", "KiB", "MiB", "GiB", "TiB"];

    /// <summary>One decimal and a binary unit: "241.6 MiB", "4.0 KiB", "512 B".</summary>
    internal static string Format(long bytes)
    {
        if (bytes is > -1024 and < 1024) return string.Create(CultureInfo.InvariantCulture, $"{bytes} B");
        double v = bytes;
        int unit = 0;
        while (Math.Abs(v) >= 1024 && unit < Units.Length - 1) { v /= 1024; unit++; }
        return string.Create(CultureInfo.InvariantCulture, $"{v:0.0} {Units[unit]}");
    }

    /// <summary>How a size is typed on the command line: "256M", "1G", "1536K", "100" (bytes).</summary>
    internal static string Argument(long bytes)
    {
        foreach (var (suffix, shift) in new[] { ("T", 40), ("G", 30), ("M", 20), ("K", 10) })
            if (bytes != 0 && bytes % (1L << shift) == 0) return string.Create(CultureInfo.InvariantCulture, $"{bytes >> shift}{suffix}");
        return bytes.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Parse "123", "64K", "1.5G", "64MiB" (binary units K, M, G, T; optional trailing B or iB; decimal point
    /// allowed, no exponent, no sign). False on anything else, and on a size that does not fit in a long.
    /// </summary>
    internal static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var s = text.Trim().ToUpperInvariant();
        if (s.EndsWith("IB", StringComparison.Ordinal)) s = s[..^2];
        else if (s.EndsWith('B')) s = s[..^1];
        int shift = 0;
        if (s.Length > 0 && "KMGT".Contains(s[^1]))
        {
            shift = s[^1] switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 40 };
            s = s[..^1];
        }
        if (s.Length == 0 || s.Length > 28 || !decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal v))
            return false;
        decimal exact = v * (1L << shift);
        if (exact > long.MaxValue) return false;
        bytes = (long)decimal.Floor(exact);
        return true;
    }
}
