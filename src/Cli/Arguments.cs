using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;

namespace PagePool.Cli;

/// <summary>
/// The parsers every option uses (System.CommandLine's CustomParser): each turns its token into a value or adds
/// one error that names the option and says in words what it accepts. Nothing is converted twice and no validator
/// reads a value the parser could not convert.
/// </summary>
internal static class Arguments
{
    /// <summary>The token of an option that takes exactly one; null (and an error) when there is none.</summary>
    private static string? Token(ArgumentResult r, string option, string accepts)
    {
        if (r.Tokens.Count == 1) return r.Tokens[0].Value;
        r.AddError($"{option}: needs {accepts}.");
        return null;
    }

    /// <summary>A whole number from <paramref name="min"/> to <paramref name="max"/> (digits only, no sign or exponent).</summary>
    internal static Func<ArgumentResult, T> Whole<T>(string option, T min, T max) where T : IBinaryInteger<T>
    {
        string accepts = string.Create(CultureInfo.InvariantCulture, $"a whole number from {min} to {max}");
        return r =>
        {
            if (Token(r, option, accepts) is not { } text) return min;
            if (T.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out T? v) && v is not null && v >= min && v <= max) return v;
            r.AddError($"{option}: '{text}' is not {accepts}.");
            return min;
        };
    }

    /// <summary>
    /// A number above <paramref name="above"/> and at most <paramref name="atMost"/>, written as digits with an
    /// optional decimal point ("35", "12.5"): no sign, exponent, NaN or infinity, so every accepted value is finite.
    /// </summary>
    internal static Func<ArgumentResult, double?> Decimal(string option, double above, double atMost)
    {
        string accepts = string.Create(CultureInfo.InvariantCulture, $"a number above {above} and at most {atMost}, such as 35 or 12.5");
        return r =>
        {
            if (Token(r, option, accepts) is not { } text) return null;
            if (double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double v) && v > above && v <= atMost) return v;
            r.AddError($"{option}: '{Shorten(text)}' is not {accepts}.");
            return null;
        };
    }

    /// <summary>A size from <paramref name="min"/> to <paramref name="max"/> bytes ("64M", "1G", "4096").</summary>
    internal static Func<ArgumentResult, long?> Bytes(string option, long min, long max, string maxReason)
    {
        string range = $"from {Size.Argument(min)} to {Size.Format(max)} ({maxReason})";
        string accepts = $"a size such as 64M, 1G or a byte count, {range}";
        return r =>
        {
            if (Token(r, option, accepts) is not { } text) return null;
            if (!Size.TryParse(text, out long bytes))
                r.AddError($"{option}: '{text}' is not {accepts}.");
            else if (bytes < min || bytes > max)
                r.AddError($"{option}: {Arguments.Shorten(text)} is not {range}.");
            else
                return bytes;
            return null;
        };
    }

    /// <summary>One of <paramref name="names"/>; an option-like token is reported as the unknown option it is.</summary>
    internal static string? OneOf(ArgumentResult r, string what, string[] names, string fallback)
    {
        if (r.Tokens.Count == 0) return fallback;
        string text = r.Tokens[0].Value;
        if (names.Contains(text)) return text;
        r.AddError(text.StartsWith('-')
            ? $"unknown option '{Shorten(text)}'."
            : $"unknown {what} '{Shorten(text)}'; one of {string.Join(", ", names)}.");
        return fallback;
    }

    /// <summary>A duration ("10s", "500ms", "2m", "1h") of at most a week.</summary>
    internal static TimeSpan? Time(ArgumentResult r, string option)
    {
        const string accepts = "a duration such as 10s, 500ms, 2m or 1h, at most a week";
        if (Token(r, option, accepts) is not { } text) return null;
        if (Duration.TryParse(text, out var d)) return d;
        r.AddError($"{option}: '{text}' is not {accepts}.");
        return null;
    }

    /// <summary>A file to write: "-" for standard output, or a path checked now, before anything runs.</summary>
    internal static string? OutputPath(ArgumentResult r, string option, bool allowStdout)
    {
        string accepts = allowStdout ? "a file to write, or - for standard output" : "a file to write";
        if (Token(r, option, accepts) is not { } path) return null;
        if (allowStdout && path == OutputFile.StandardOutput) return path;
        if (OutputFile.Problem(path) is { } problem)
        {
            r.AddError($"{option}: cannot write '{Shorten(path)}': {problem}.");
            return null;
        }
        return path;
    }

    /// <summary>A file to read, which must exist and be a regular file.</summary>
    internal static string? InputPath(ArgumentResult r, string option)
    {
        if (Token(r, option, "a file to read") is not { } path) return null;
        if (path.Length == 0 || !File.Exists(path) || !OutputFile.IsRegularFile(path))
        {
            r.AddError($"{option}: '{Shorten(path)}' is not a file{(Directory.Exists(path) ? " (it is a folder)" : "")}.");
            return null;
        }
        return path;
    }

    /// <summary>A folder to create files in, which must exist, be a folder, and take a new file; checked now, before anything runs.</summary>
    internal static string? Folder(ArgumentResult r, string option)
    {
        if (Token(r, option, "a folder to write in") is not { } path) return null;
        string? problem = path.Length == 0 ? "the name is empty"
            : File.Exists(path) ? "it is a file, not a folder"
            : !Directory.Exists(path) ? "there is no such folder"
            : OutputFile.Problem(Path.Combine(path, "pagepool-probe"));
        if (problem is null) return path;
        r.AddError($"{option}: cannot use '{Shorten(path)}': {problem}.");
        return null;
    }

    /// <summary>A token as shown in an error: at most 60 characters, one line.</summary>
    internal static string Shorten(string text)
    {
        text = text.ReplaceLineEndings(" ");
        return text.Length <= 60 ? text : text[..57] + "...";
    }
}
