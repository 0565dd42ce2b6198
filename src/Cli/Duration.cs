using System.Globalization;

namespace PagePool.Cli;

/// <summary>Durations from the command line: "500ms", "10s", "2m", "1h", or plain seconds ("2.5").</summary>
internal static class Duration
{
    /// <summary>The longest run the tool accepts: a week.</summary>
    internal static readonly TimeSpan Longest = TimeSpan.FromDays(7);

    /// <summary>Parse a positive duration of at most a week (no exponent, no sign); false on anything else.</summary>
    internal static bool TryParse(string text, out TimeSpan duration)
    {
        text = text.Trim();
        (string digits, decimal scale) = text switch
        {
            _ when text.EndsWith("ms", StringComparison.Ordinal) => (text[..^2], 0.001m),
            _ when text.EndsWith('s') => (text[..^1], 1m),
            _ when text.EndsWith('m') => (text[..^1], 60m),
            _ when text.EndsWith('h') => (text[..^1], 3600m),
            _ => (text, 1m),
        };
        duration = default;
        if (digits.Length is 0 or > 20 || !decimal.TryParse(digits, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out decimal v))
            return false;
        decimal seconds = v * scale;
        if (seconds <= 0 || seconds > (decimal)Longest.TotalSeconds) return false;
        duration = TimeSpan.FromSeconds((double)seconds);
        return duration > TimeSpan.Zero;
    }

    /// <summary>"10 s", "500 ms", "2.5 min".</summary>
    internal static string Format(TimeSpan d) => d.TotalSeconds switch
    {
        < 1 => string.Create(CultureInfo.InvariantCulture, $"{d.TotalMilliseconds:0} ms"),
        < 120 => string.Create(CultureInfo.InvariantCulture, $"{d.TotalSeconds:0.###} s"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{d.TotalMinutes:0.#} min"),
    };
}
