using System.Text.Json;
using PagePool.Cli.Stress;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class StressTests
{
    private static JsonElement RunJson(out PagepoolProcess.Result result, params string[] args) => PagepoolProcess.RunJson(out result, args);

    [Theory]
    [InlineData("alloc")]
    [InlineData("caching")]
    [InlineData("churn")]
    [InlineData("mixed")]
    public void Every_scenario_runs_clean_under_verification(string scenario)
    {
        var json = RunJson(out var r, "stress", scenario, "-n", "1500", "-t", "3", "-w", "96M", "--verify");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(0, json.GetProperty("verify_failures").GetInt64());
        Assert.Equal(0, json.GetProperty("invariant_violations").GetInt64());
        Assert.Equal(1500, json.GetProperty("operations").GetInt64());
        Assert.Contains("every page accounted for exactly once", r.Stdout);
    }

    // The layout every scenario writes: key paths and their JSON kinds.
    private static SortedDictionary<string, JsonValueKind> Schema(JsonElement e, string prefix = "")
    {
        var keys = new SortedDictionary<string, JsonValueKind>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            string path = prefix + p.Name;
            if (path == "scenario") continue; // the one part that is the scenario's own (swap and DMA figures)
            if (p.Value.ValueKind == JsonValueKind.Object)
                foreach (var (k, v) in Schema(p.Value, path + ".")) keys[k] = v;
            else if (path.StartsWith("settings.", StringComparison.Ordinal) && p.Value.ValueKind == JsonValueKind.Null)
                keys[path] = JsonValueKind.Undefined; // a setting of other scenarios (ops_kind, swap_store...): null here
            else
                keys[path] = p.Value.ValueKind;
        }
        return keys;
    }

    [Fact]
    public void A_dma_run_records_its_devices_and_injection_in_the_json_settings_and_others_record_null()
    {
        var dma = RunJson(out var r, "stress", "dma", "-n", "200", "-t", "2", "--ops-kind", "swiotlb", "--devices", "3", "--mask", "40", "--deferred-flush");
        Assert.Equal(0, r.ExitCode);
        var s = dma.GetProperty("settings");
        Assert.Equal(("swiotlb", 3, 40, true), (s.GetProperty("ops_kind").GetString(), s.GetProperty("devices").GetInt32(), s.GetProperty("mask_bits").GetInt32(), s.GetProperty("deferred_flush").GetBoolean()));
        Assert.Equal(JsonValueKind.Null, s.GetProperty("inject").ValueKind);
        Assert.Equal(JsonValueKind.Null, s.GetProperty("swap_store").ValueKind);

        var alloc = RunJson(out r, "stress", "alloc", "-n", "200", "-t", "2").GetProperty("settings");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(JsonValueKind.Null, alloc.GetProperty("ops_kind").ValueKind);
    }

    [Fact]
    public void Every_scenario_writes_one_json_schema_with_every_operation_and_the_settings()
    {
        SortedDictionary<string, JsonValueKind>? first = null;
        foreach (var scenario in StressScenario.All.Select(s => s.Name))
        {
            var json = RunJson(out var r, "stress", scenario, "-n", "400", "-t", "2", "-w", "64M", "-s", "7");
            Assert.Equal(0, r.ExitCode);
            Assert.Equal(StressRunner.SchemaVersion, json.GetProperty("schema_version").GetInt32());
            var settings = json.GetProperty("settings");
            Assert.Equal(scenario, settings.GetProperty("scenario").GetString());
            Assert.Equal(2, settings.GetProperty("threads").GetInt32());
            Assert.Equal(400, settings.GetProperty("operations").GetInt64());
            Assert.Equal(JsonValueKind.Null, settings.GetProperty("duration_s").ValueKind);
            Assert.Equal(64L << 20, settings.GetProperty("working_set_bytes").GetInt64());
            Assert.True(settings.GetProperty("pool_limit_bytes").GetInt64() > 0);
            Assert.False(settings.GetProperty("verify").GetBoolean());
            Assert.Equal(7UL, settings.GetProperty("seed").GetUInt64());
            foreach (var op in StressOps.All)
                Assert.True(json.GetProperty("ops").TryGetProperty(StressOps.Key(op), out _), $"{scenario} lacks ops.{StressOps.Key(op)}");
            var pool = json.GetProperty("pool");
            if (scenario != "dma") // dma's devices draw on a machine of their own, not on the pool
                Assert.True(pool.GetProperty("hits").GetInt64() + pool.GetProperty("misses").GetInt64() > 0, $"{scenario}: no pool activity");
            Assert.Contains("3.2%", json.GetProperty("latency_resolution").GetString());
            Assert.Equal(JsonValueKind.Object, json.GetProperty("scenario").ValueKind);
            var schema = Schema(json);
            if (first is null) first = schema;
            else Assert.Equal(first.Keys, schema.Keys); // the same keys; a setting only some scenarios use may be null
            foreach (var (k, kind) in schema)
                if (first[k] != JsonValueKind.Undefined && kind != JsonValueKind.Undefined) Assert.Equal(first[k], kind);
        }
    }

    [Fact]
    public void The_stress_operation_names_come_from_the_one_table()
    {
        Assert.Equal(Enum.GetValues<StressOp>().Length, StressOps.Count);
        Assert.Equal("allocate_page", StressOps.Key(StressOp.AllocatePage));
        Assert.Equal(StressOps.Count, StressOps.All.Select(StressOps.Key).Distinct().Count());
    }

    [Fact]
    public void Samples_are_one_csv_row_per_interval_with_the_pool_limit()
    {
        string file = Path.Combine(Path.GetTempPath(), $"pagepool-samples-{Guid.NewGuid():N}.csv");
        try
        {
            var r = PagepoolProcess.Run("stress", "churn", "-d", "2500ms", "-t", "2", "-w", "16M", "--pool-limit", "4M", "--samples", file);
            Assert.Equal(0, r.ExitCode);
            var lines = File.ReadAllLines(file);
            Assert.Equal("elapsed_s,operations,ops_per_s,pooled_bytes,pool_limit_bytes,rss_bytes,hits,misses,interval_hit_ratio", lines[0]);
            Assert.InRange(lines.Length - 1, 2, 5); // about one a second, plus the last
            foreach (var row in lines.Skip(1))
            {
                var cells = row.Split(',');
                Assert.Equal(9, cells.Length);
                Assert.Equal((4L << 20).ToString(), cells[4]);
                Assert.InRange(double.Parse(cells[8], System.Globalization.CultureInfo.InvariantCulture), 0, 1);
            }
            Assert.Contains("of 4.0 MiB", r.Stderr); // the progress line: pooled next to the limit
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void The_same_seed_and_operation_count_give_the_same_operation_sequence()
    {
        var a = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "96M", "-s", "42");
        var b = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "96M", "-s", "42");
        Assert.Equal(a.GetProperty("sequence_hash").GetString(), b.GetProperty("sequence_hash").GetString());
    }

    [Fact]
    public void A_different_seed_gives_a_different_operation_sequence()
    {
        var a = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "96M", "-s", "42");
        var b = RunJson(out _, "stress", "mixed", "-n", "2000", "-t", "3", "-w", "96M", "-s", "43");
        Assert.NotEqual(a.GetProperty("sequence_hash").GetString(), b.GetProperty("sequence_hash").GetString());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_corruption_injected_behind_the_library_is_caught_and_the_exit_code_is_1(bool verify)
    {
        string[] args = ["stress", "alloc", "-n", "2000", "-t", "2", "-w", "32M", "--inject-corruption"];
        var json = RunJson(out var r, verify ? [.. args, "--verify"] : args);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal(1, json.GetProperty("verify_failures").GetInt64());
        Assert.Contains("corrupt", r.Stdout);
        Assert.Contains(": 1 failure", r.Stdout); // not "1 failures"
    }

    [Theory]
    [InlineData(0L, "0 B")]
    [InlineData(1023L, "1023 B")]
    [InlineData(4096L, "4.0 KiB")]
    [InlineData(253_335_552L, "241.6 MiB")]
    [InlineData(1_928_000_000L, "1.8 GiB")]
    public void Sizes_print_with_a_unit_and_one_decimal(long bytes, string shown)
        => Assert.Equal(shown, Size.Format(bytes));

    [Theory]
    [InlineData(0L, 31L)]
    [InlineData(32L, 33L)]
    [InlineData(1000L, 1023L)]
    [InlineData(123_456_789L, 1L << 40)]
    public void A_latency_percentile_is_at_most_3_2_percent_above_the_true_value(long from, long to)
    {
        for (long v = Math.Max(from, 1); v <= to; v = v < 64 ? v + 1 : v + v / 97)
        {
            long upper = LatencyHistogram.UpperBound(LatencyHistogram.Index(v));
            Assert.InRange(upper, v, v + v / 32 + 1);
        }
    }
}
