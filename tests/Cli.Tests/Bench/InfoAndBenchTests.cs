using System.Text.Json;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class InfoAndBenchTests
{
    [Fact]
    public void Info_json_reports_the_page_size_and_the_flush_instruction()
    {
        var r = PagepoolProcess.Run("info", "--json");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.Equal(Environment.SystemPageSize, doc.RootElement.GetProperty("page_size").GetInt32());
        Assert.Contains(doc.RootElement.GetProperty("flush_instruction").GetString(), new[] { "clflush", "clflushopt" });
        Assert.True(doc.RootElement.GetProperty("mem.total_bytes").GetInt64() > 0);
    }

    [Fact]
    public void Bench_json_keeps_the_flat_medians_and_adds_every_sample_and_unit()
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-test-{Guid.NewGuid():N}.json");
        try
        {
            var r = PagepoolProcess.Run("bench", "--quick", "--only", "caching", "--repeat", "3", "--json", file);
            Assert.Equal(0, r.ExitCode);
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            var numbers = doc.RootElement.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.Number).ToArray();
            Assert.Equal(["caching.single.ns_per_page", "caching.batched.ns_per_page"], numbers.Select(p => p.Name));
            Assert.All(numbers, p => Assert.True(p.Value.GetDouble() > 0));
            var samples = doc.RootElement.GetProperty("samples");
            foreach (var p in numbers)
            {
                var s = samples.GetProperty(p.Name).EnumerateArray().Select(v => v.GetDouble()).Order().ToArray();
                Assert.Equal(3, s.Length);
                Assert.Equal(s[1], p.Value.GetDouble(), 3); // the flat number is the median of the samples
            }
            Assert.Equal("ns/page", doc.RootElement.GetProperty("units").GetProperty("caching.batched.ns_per_page").GetString());
            var machine = doc.RootElement.GetProperty("machine");
            Assert.Contains(File.ReadAllLines("/proc/cpuinfo").First(l => l.StartsWith("vendor_id")).Split(':')[1].Trim(), machine.GetProperty("cpu").GetString());
            Assert.Equal(Environment.ProcessorCount, machine.GetProperty("cpus").GetInt32());
            Assert.Contains("caching.batched.ns_per_page", r.Stdout); // and the table
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Bench_json_dash_writes_the_json_alone_to_standard_output_and_the_table_to_standard_error()
    {
        var r = PagepoolProcess.Run("bench", "--quick", "--only", "caching", "--repeat", "1", "--json", "-");
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.True(doc.RootElement.GetProperty("caching.single.ns_per_page").GetDouble() > 0);
        Assert.Contains("caching.single.ns_per_page", r.Stderr);
    }

    [Fact]
    public void Bench_table_has_a_unit_column_and_the_spread_of_the_repetitions()
    {
        var r = PagepoolProcess.Run("bench", "--quick", "--only", "caching", "--repeat", "3");
        Assert.Equal(0, r.ExitCode);
        var header = r.Stdout.Split('\n')[0];
        Assert.Matches(@"^metric\s+median\s+unit\s+spread of 3\s+what", header);
        var line = r.Stdout.Split('\n').Single(l => l.StartsWith("caching.batched.ns_per_page", StringComparison.Ordinal));
        var m = System.Text.RegularExpressions.Regex.Match(line, @"^\S+\s+(?<median>[\d.]+)\s+ns/page\s+(?<min>[\d.]+)\.\.(?<max>[\d.]+)\s");
        Assert.True(m.Success, line);
        double median = double.Parse(m.Groups["median"].Value, System.Globalization.CultureInfo.InvariantCulture), min = double.Parse(m.Groups["min"].Value, System.Globalization.CultureInfo.InvariantCulture), max = double.Parse(m.Groups["max"].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(median, min, max);
    }

    [Fact]
    public void Bench_repeat_outside_its_range_is_a_usage_error()
    {
        var r = PagepoolProcess.Run("bench", "--quick", "--only", "caching", "--repeat", "0");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--repeat", r.Stderr);
    }

    [Fact]
    public void Bench_svg_is_well_formed_with_a_bar_per_metric_and_labelled_axes()
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-test-{Guid.NewGuid():N}.svg");
        try
        {
            var r = PagepoolProcess.Run("bench", "--quick", "--only", "caching", "--repeat", "3", "--svg", file);
            Assert.Equal(0, r.ExitCode);
            var svg = System.Xml.Linq.XDocument.Load(file).Root!;
            Assert.Equal("800", svg.Attribute("width")!.Value);
            var texts = svg.Descendants().Where(e => e.Name.LocalName == "text").Select(e => e.Value).ToList();
            Assert.Contains("caching.single.ns_per_page", texts);
            Assert.Contains("caching.batched.ns_per_page", texts);
            Assert.Contains(texts, t => t.StartsWith("Per page of a batch (ns/page", StringComparison.Ordinal)); // panel title with unit
            Assert.Contains(texts, t => t.StartsWith("ns/page", StringComparison.Ordinal));                      // axis label
            Assert.Equal(2, svg.Descendants().Count(e => e.Name.LocalName == "rect" && e.Elements().Any(c => c.Name.LocalName == "title")));
        }
        finally
        {
            File.Delete(file);
        }
    }
}
