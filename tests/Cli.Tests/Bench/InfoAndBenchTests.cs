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
    public void Bench_json_is_a_flat_object_of_the_group_metrics()
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-test-{Guid.NewGuid():N}.json");
        try
        {
            var r = PagepoolProcess.Run("bench", "--quick", "--only", "caching", "--json", file);
            Assert.Equal(0, r.ExitCode);
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            var names = doc.RootElement.EnumerateObject().Select(p => p.Name).ToArray();
            Assert.Equal(["caching.single.ns_per_page", "caching.batched.ns_per_page"], names);
            Assert.All(doc.RootElement.EnumerateObject(), p => Assert.True(p.Value.GetDouble() > 0));
            Assert.Contains("caching.batched.ns_per_page", r.Stdout); // and the table
        }
        finally
        {
            File.Delete(file);
        }
    }
}
