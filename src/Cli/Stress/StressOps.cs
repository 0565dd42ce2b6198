using System.Text;

namespace PagePool.Cli.Stress;

/// <summary>What is derived from <see cref="StressOp"/>: how many there are and their names in the summary and JSON.</summary>
internal static class StressOps
{
    /// <summary>Every operation, in the enum's order (also the histograms' index).</summary>
    internal static readonly StressOp[] All = Enum.GetValues<StressOp>();

    /// <summary>How many operations there are.</summary>
    internal static int Count => All.Length;

    private static readonly string[] Keys = All.Select(op => SnakeCase(op.ToString())).ToArray();

    /// <summary>The operation's name in the summary and the JSON: "allocate_page".</summary>
    internal static string Key(StressOp op) => Keys[(int)op];

    private static string SnakeCase(string name)
    {
        var b = new StringBuilder();
        foreach (char c in name)
        {
            if (char.IsUpper(c) && b.Length > 0) b.Append('_');
            b.Append(char.ToLowerInvariant(c));
        }
        return b.ToString();
    }
}
