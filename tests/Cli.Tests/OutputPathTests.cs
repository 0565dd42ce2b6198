using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>Result files: checked before anything runs, written whole or not at all, "-" for standard output.</summary>
public sealed class OutputPathTests
{
    public static TheoryData<string, string> BadPaths => new()
    {
        { "/nonexistent-folder/out.json", "there is no folder" },
        { "/tmp", "it is a folder" },
        { "/dev/full", "not a regular file" },
        { "", "the name is empty" },
        { "/tmp/" + new string('x', 300), "more than the 255" },
    };

    [Theory]
    [MemberData(nameof(BadPaths))]
    public void Stress_json_to_a_path_that_cannot_be_written_fails_before_the_run(string path, string reason)
    {
        // Without the check, this run would take 30 s and then lose its results.
        var r = PagepoolProcess.Run(["stress", "alloc", "-d", "30s", "--json", path], TimeSpan.FromSeconds(20));
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.ErrorLines);
        Assert.Contains("--json", r.Stderr);
        Assert.Contains(reason, r.Stderr);
        Assert.True(r.Elapsed < TimeSpan.FromSeconds(15), $"took {r.Elapsed}");
    }

    [Theory]
    [MemberData(nameof(BadPaths))]
    public void Bench_json_and_svg_to_a_path_that_cannot_be_written_fail_before_the_run(string path, string reason)
    {
        // Without the check, the pool group ran for 20 s and then lost its results, or crashed on an empty name.
        foreach (var option in new[] { "--json", "--svg" })
        {
            var r = PagepoolProcess.Run(["bench", "--only", "pool", option, path], TimeSpan.FromSeconds(20));
            Assert.Equal(2, r.ExitCode);
            Assert.Single(r.ErrorLines);
            Assert.Contains(option, r.Stderr);
            Assert.Contains(reason, r.Stderr);
            Assert.DoesNotContain("bench: pool", r.Stderr);
        }
    }

    [Theory]
    [MemberData(nameof(BadPaths))]
    public void Trace_output_to_a_path_that_cannot_be_written_fails_before_starting_the_child(string path, string reason)
    {
        // The harness fails the test if any process of this run (a suspended child) is left behind.
        var r = PagepoolProcess.Run(["trace", "-o", path, "--", "info"], TimeSpan.FromSeconds(20));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--output", r.Stderr);
        Assert.Contains(reason, r.Stderr);
        Assert.DoesNotContain("trace: collecting", r.Stderr);
    }

    [Fact]
    public void Stress_json_dash_writes_the_json_to_standard_output_and_the_summary_to_stderr()
    {
        var r = PagepoolProcess.Run("stress", "alloc", "-n", "300", "-t", "2", "-w", "4M", "--json", "-");
        Assert.Equal(0, r.ExitCode);
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        Assert.Equal(300, doc.RootElement.GetProperty("operations").GetInt64());
        Assert.Contains("invariants", r.Stderr);
    }

    [Fact]
    public void Stress_json_replaces_the_target_whole_and_leaves_no_temporary_file()
    {
        string dir = Directory.CreateTempSubdirectory("pagepool-out-").FullName;
        try
        {
            string target = Path.Combine(dir, "result.json");
            File.WriteAllText(target, "old");
            var r = PagepoolProcess.Run("stress", "alloc", "-n", "300", "-t", "2", "-w", "4M", "--json", target);
            Assert.Equal(0, r.ExitCode);
            Assert.StartsWith("{", File.ReadAllText(target));
            Assert.Equal(["result.json"], Directory.GetFiles(dir).Select(Path.GetFileName));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
