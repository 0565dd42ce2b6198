using System.Globalization;

namespace PagePool.Cli;

/// <summary>Durations from the command line: "500ms", "10s", "2m", "1h", or plain seconds ("2.5").</summary>
internal static class Duration
{
    /// <summary>Parse a positive duration of at most a week; false on anything else.</summary>
    internal static bool TryParse(string text, out TimeSpan duration)
    {
        text = text.Trim();
        (string digits, double scale) = text switch
        {
            _ when text.EndsWith("ms", StringComparison.Ordinal) => (text[..^2], 0.001),
            _ when text.EndsWith('s') => (text[..^1], 1.0),
            _ when text.EndsWith('m') => (text[..^1], 60.0),
            _ when text.EndsWith('h') => (text[..^1], 3600.0),
            _ => (text, 1.0),
        };
        duration = default;
        if (!double.TryParse(digits, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !(v > 0) || v * scale > 7 * 86400)
            return false;
        duration = TimeSpan.FromSeconds(v * scale);
        return true;
    }
}
