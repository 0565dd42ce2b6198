using Xunit;

namespace PagePool.Allocator.Tests;

// Counts file descriptors and mappings of the whole process: run alone.
[Collection(nameof(RssTests))]
public sealed class MisuseTests
{
    private const int StepsPerEpisode = 200;

    [Fact]
    public void Seeded_misuse_sequences_end_in_typed_errors_with_nothing_changed_leaked_or_crashed()
    {
        // A case is one operation. PAGEPOOL_FUZZ_CASES=1000000 for a long run; CI runs a few thousand.
        int cases = int.TryParse(Environment.GetEnvironmentVariable("PAGEPOOL_FUZZ_CASES"), out int n) && n > 0 ? n : 4000;
        new MisuseGenerator(-1, new(), new()).Run(20); // first use loads the shim and creates the event source: not leaks
        int files = Leaks.OpenFiles(), mappings = Leaks.ArenaMappings();
        var outcomes = new Dictionary<string, long>();
        var failures = new List<string>();
        for (int episode = 0; episode * StepsPerEpisode < cases && failures.Count == 0; episode++)
        {
            new MisuseGenerator(episode, outcomes, failures).Run(Math.Min(StepsPerEpisode, cases - episode * StepsPerEpisode));
            if (failures.Count != 0) failures.Insert(0, $"episode {episode} (seed {episode}):");
            if (Leaks.OpenFiles() != files) failures.Add($"episode {episode}: {Leaks.OpenFiles() - files} file descriptors left open");
            if (Leaks.ArenaMappings() != mappings) failures.Add($"episode {episode}: {Leaks.ArenaMappings() - mappings} arena mappings left");
        }
        string figures = $"misuse: {outcomes.Values.Sum()} cases; misbehaved {failures.Count}; "
                         + string.Join(", ", outcomes.OrderByDescending(o => o.Value).Select(o => $"{o.Key} {o.Value}"));
        TestContext.Current.TestOutputHelper?.WriteLine(figures);
        if (Environment.GetEnvironmentVariable("PAGEPOOL_FUZZ_REPORT") is { Length: > 0 } report) File.AppendAllText(report, figures + "\n");
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(20)));
        Assert.True(outcomes.Keys.Count(k => k != "ok") >= 8, "the generator reaches at least eight kinds of typed error");
    }
}
