using System.CommandLine;
using PagePool;
using PagePool.Cli;

// pagepool: stress, measure and inspect PagePool. Exit codes: 0 success, 1 a run failed (verification,
// invariant, or an error from the library), 2 bad arguments.
var root = new RootCommand("pagepool: stress, benchmark and inspect the PagePool native page pool.");
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(BenchCommand.Create());

var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    Console.Error.WriteLine($"pagepool: {parse.Errors[0].Message} (see 'pagepool {parse.CommandResult.Command.Name} --help')");
    return ExitCodes.BadArguments;
}
try
{
    return parse.Invoke();
}
catch (UsageException e)
{
    Console.Error.WriteLine($"pagepool: {e.Message}");
    return ExitCodes.BadArguments;
}
catch (PagePoolException e)
{
    Console.Error.WriteLine($"pagepool: {e.Message}");
    return ExitCodes.Failed;
}
