using System.Globalization;
using System.Net;
using System.Text;

namespace PagePool.Cli.Bench;

/// <summary>
/// The results as an SVG chart 800 px wide (README width): one panel per unit, each a horizontal bar per metric
/// sorted by median, coloured by what it is (a PagePool path, a peer allocator, a CPU or kernel floor), with the
/// spread of the repetitions as a whisker. A panel whose values span more than 10x uses a log scale.
/// </summary>
internal static class BenchChart
{
    private const int Width = 800;
    private const int LabelRight = 296;      // metric names end here (right-aligned; 40 characters fit)
    private const int PlotLeft = 304, PlotRight = 716; // value labels follow the bar, up to the right edge
    private const int Row = 18, BarHeight = 12;
    private const int PanelTitle = 26, AxisBelow = 34, PanelGap = 14;
    private const double LogScaleSpread = 10;

    private static readonly (string Kind, string Colour)[] Kinds =
    [
        ("PagePool", "#2f6db5"),
        ("peer allocator", "#e08a1e"),
        ("floor: CPU or kernel alone", "#8c8c8c"),
    ];

    /// <summary>Which colour a metric gets: peers by their library name, floors by the baseline group.</summary>
    private static int KindOf(string metric)
    {
        if (metric.Contains("mimalloc", StringComparison.Ordinal) || metric.Contains("jemalloc", StringComparison.Ordinal)
            || metric.Contains("native_", StringComparison.Ordinal)) return 1;
        return metric.StartsWith("baseline.", StringComparison.Ordinal) ? 2 : 0;
    }

    internal static string Draw(IReadOnlyList<Metric> metrics, int reps)
    {
        var panels = metrics.GroupBy(m => m.Unit).Select(g => g.OrderBy(m => m.Value).ToList()).ToList();
        int height = 64 + panels.Sum(p => PanelTitle + p.Count * Row + AxisBelow + PanelGap);
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"""<svg xmlns="http://www.w3.org/2000/svg" width="{Width}" height="{height}" viewBox="0 0 {Width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">""").Append('\n');
        svg.Append($"""<rect width="{Width}" height="{height}" fill="white"/>""").Append('\n');
        svg.Append(CultureInfo.InvariantCulture, $"""<text x="10" y="20" font-size="14" font-weight="bold">pagepool bench: median of {reps} repetitions, whisker min..max; shorter is better except ratios</text>""").Append('\n');
        int lx = 10;
        foreach (var (kind, colour) in Kinds)
        {
            svg.Append(CultureInfo.InvariantCulture, $"""<rect x="{lx}" y="32" width="12" height="12" fill="{colour}"/><text x="{lx + 16}" y="42">{kind}</text>""").Append('\n');
            lx += 30 + kind.Length * 7;
        }
        int y = 64;
        foreach (var panel in panels) y = DrawPanel(svg, panel, y);
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static int DrawPanel(StringBuilder svg, List<Metric> panel, int top)
    {
        string unit = panel[0].Unit;
        double lo = panel.Min(m => Math.Max(m.Samples.Min, 1e-9)), hi = panel.Max(m => m.Samples.Max);
        bool log = lo > 0 && hi / lo > LogScaleSpread;
        Func<double, double> x;
        double[] ticks;
        if (log)
        {
            double a = Math.Pow(10, Math.Floor(Math.Log10(lo))), b = Math.Pow(10, Math.Ceiling(Math.Log10(hi)));
            x = v => PlotLeft + (PlotRight - PlotLeft) * (Math.Log10(Math.Max(v, a)) - Math.Log10(a)) / (Math.Log10(b) - Math.Log10(a));
            ticks = LogTicks(a, b);
        }
        else
        {
            double step = NiceStep(hi / 5), b = Math.Ceiling(hi / step) * step;
            x = v => PlotLeft + (PlotRight - PlotLeft) * v / b;
            ticks = Enumerable.Range(0, (int)Math.Round(b / step) + 1).Select(i => i * step).ToArray();
        }
        string scale = log ? "log scale" : "linear scale";
        svg.Append(CultureInfo.InvariantCulture, $"""<text x="10" y="{top + 16}" font-size="13" font-weight="bold">{Title(unit)} ({unit}, {scale})</text>""").Append('\n');
        int plotTop = top + PanelTitle, plotBottom = plotTop + panel.Count * Row;
        foreach (var t in ticks)
        {
            double tx = x(t);
            svg.Append(CultureInfo.InvariantCulture, $"""<line x1="{tx:0.#}" y1="{plotTop - 4}" x2="{tx:0.#}" y2="{plotBottom}" stroke="#e4e4e4"/>""");
            svg.Append(CultureInfo.InvariantCulture, $"""<text x="{tx:0.#}" y="{plotBottom + 14}" text-anchor="middle" font-size="11" fill="#444">{Tick(t)}</text>""").Append('\n');
        }
        if (unit == MetricUnit.Ratio)
        {
            double ideal = x(2);
            svg.Append(CultureInfo.InvariantCulture, $"""<line x1="{ideal:0.#}" y1="{plotTop - 4}" x2="{ideal:0.#}" y2="{plotBottom}" stroke="#2a9d3a" stroke-dasharray="4 3"/><text x="{ideal + 3:0.#}" y="{plotTop + 2}" font-size="10" fill="#2a9d3a">2 threads = 2x</text>""").Append('\n');
        }
        svg.Append(CultureInfo.InvariantCulture, $"""<line x1="{PlotLeft}" y1="{plotBottom}" x2="{PlotRight}" y2="{plotBottom}" stroke="#444"/>""");
        svg.Append(CultureInfo.InvariantCulture, $"""<text x="{(PlotLeft + PlotRight) / 2}" y="{plotBottom + 28}" text-anchor="middle" font-size="11" fill="#444">{(unit == MetricUnit.Ratio ? "throughput ratio" : unit)}{(log ? " (log scale)" : "")}</text>""").Append('\n');
        for (int i = 0; i < panel.Count; i++)
        {
            var m = panel[i];
            int ry = plotTop + i * Row;
            double x0 = log ? PlotLeft : x(0), xm = x(m.Value), xa = x(m.Samples.Min), xb = x(m.Samples.Max);
            string colour = Kinds[KindOf(m.Name)].Colour;
            int cy = ry + Row / 2;
            svg.Append(CultureInfo.InvariantCulture, $"""<text x="{LabelRight}" y="{cy + 4}" text-anchor="end">{WebUtility.HtmlEncode(m.Name)}</text>""");
            svg.Append(CultureInfo.InvariantCulture, $"""<rect x="{x0:0.#}" y="{cy - BarHeight / 2}" width="{Math.Max(1, xm - x0):0.#}" height="{BarHeight}" fill="{colour}"><title>{WebUtility.HtmlEncode(m.Description)}</title></rect>""");
            svg.Append(CultureInfo.InvariantCulture, $"""<path d="M{xa:0.#} {cy}H{xb:0.#}M{xa:0.#} {cy - 4}V{cy + 4}M{xb:0.#} {cy - 4}V{cy + 4}" stroke="#222" stroke-width="1.2"/>""");
            svg.Append(CultureInfo.InvariantCulture, $"""<text x="{Math.Max(xm, xb) + 5:0.#}" y="{cy + 4}" font-size="11">{BenchCommand.Format(m.Value)}</text>""").Append('\n');
        }
        return plotBottom + AxisBelow + PanelGap;
    }

    // 0.5, 2, 50, 1k, 20k: short enough to sit under a gridline.
    private static string Tick(double v) => v >= 1000
        ? (v / 1000).ToString("0.#", CultureInfo.InvariantCulture) + "k"
        : v.ToString("0.##", CultureInfo.InvariantCulture);

    private static string Title(string unit) => unit switch
    {
        "ns" => "One operation",
        "us" => "One large operation",
        "ns/page" => "Per page of a batch",
        MetricUnit.Ratio => "Scaling: throughput of two threads over one",
        _ => "Other measurements",
    };

    // 1, 2, 5 per decade when few decades are shown, powers of ten alone otherwise.
    private static double[] LogTicks(double a, double b)
    {
        int decades = (int)Math.Round(Math.Log10(b / a));
        var ticks = new List<double>();
        for (double d = a; d <= b * 1.0001; d *= 10)
            foreach (var k in decades <= 3 ? new[] { 1.0, 2, 5 } : [1.0])
                if (d * k <= b * 1.0001) ticks.Add(d * k);
        return ticks.ToArray();
    }

    private static double NiceStep(double rough)
    {
        if (rough <= 0) return 1;
        double p = Math.Pow(10, Math.Floor(Math.Log10(rough))), f = rough / p;
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
    }
}
