namespace PagePool.Cli.Tests;

/// <summary>Runs pagepool (the AOT binary when published, else the JIT build) with the bench's deliberate slowdown set.</summary>
internal static class SlowedPagepool
{
    internal static PagepoolProcess.Result Run(string slowdown, params string[] args)
        => PagepoolProcess.Run(args, TimeSpan.FromSeconds(120), new Dictionary<string, string> { [Bench.BenchSlowdown.Variable] = slowdown });
}
