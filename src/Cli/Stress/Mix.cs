using System.CommandLine.Parsing;
using System.Globalization;

namespace PagePool.Cli.Stress;

/// <summary>
/// Weights of choices, typed as KEY:WEIGHT,KEY:WEIGHT ("wb:2,wc:1", "0:8,9:1"): each key at most once, weights
/// whole numbers up to <see cref="MaxWeight"/>, at least one positive. Prints the way it is typed.
/// </summary>
internal sealed class Mix<T> where T : struct
{
    internal const int MaxWeight = 1_000_000;

    private readonly Func<T, string> _format;

    internal (T Key, int Weight)[] Items { get; }

    /// <summary>The sum of the weights (at most keys x MaxWeight: never overflows).</summary>
    internal int Total { get; }

    internal Mix((T Key, int Weight)[] items, Func<T, string> format)
    {
        Items = items;
        _format = format;
        Total = items.Sum(i => i.Weight);
    }

    /// <summary>Pick a key for a uniform number in [0, Total).</summary>
    internal T Pick(int r)
    {
        foreach (var (key, weight) in Items) if ((r -= weight) < 0) return key;
        return Items[^1].Key;
    }

    public override string ToString() => string.Join(',', Items.Select(i => string.Create(CultureInfo.InvariantCulture, $"{_format(i.Key)}:{i.Weight}")));

    /// <summary>
    /// The option parser. <paramref name="key"/> returns the key or the reason the text is not one ("order 12
    /// is outside 0..9").
    /// </summary>
    internal static Func<ArgumentResult, Mix<T>?> Parser(string option, string example, Func<string, (T? Key, string? Why)> key, Func<T, string> format)
    {
        return r =>
        {
            if (r.Tokens.Count != 1)
            {
                r.AddError($"{option}: needs KEY:WEIGHT pairs, for example {example}.");
                return null;
            }
            string text = r.Tokens[0].Value;
            var items = new List<(T, int)>();
            foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
            {
                int colon = part.IndexOf(':');
                if (colon < 0)
                    return Error(r, $"{option}: '{Arguments.Shorten(part)}' is not KEY:WEIGHT (for example {example}).");
                var (k, why) = key(part[..colon]);
                if (k is not { } found)
                    return Error(r, $"{option}: {why}.");
                string w = part[(colon + 1)..];
                if (!int.TryParse(w, NumberStyles.None, CultureInfo.InvariantCulture, out int weight) || weight > MaxWeight)
                    return Error(r, $"{option}: the weight '{Arguments.Shorten(w)}' of {format(found)} is not a whole number from 0 to {MaxWeight}.");
                if (items.Any(i => EqualityComparer<T>.Default.Equals(i.Item1, found)))
                    return Error(r, $"{option}: {format(found)} is given twice.");
                items.Add((found, weight));
            }
            if (items.All(i => i.Item2 == 0))
                return Error(r, $"{option}: '{Arguments.Shorten(text)}' gives no positive weight.");
            return new Mix<T>(items.ToArray(), format);
        };
    }

    private static Mix<T>? Error(ArgumentResult r, string message)
    {
        r.AddError(message);
        return null;
    }
}
