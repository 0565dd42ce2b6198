using System.CommandLine;
using PagePool;
using PagePool.Cli;

// pagepool: stress, measure and inspect PagePool. Exit codes: 0 success, 1 a run failed (verification,
// invariant, or an error from the library), 2 bad arguments.
var root = new RootCommand("pagepool: stress, benchmark and inspect the PagePool native page pool.");
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(StressCommand.Create());
root.Subcommands.Add(TraceCommand.Create());
root.Subcommands.Add(GateCommand.Create());

var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    // The error naming an offending token says most; "a command is required" is what remains when there is none.
    var error = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parse.Errors[0];
    var command = parse.CommandResult.Command;
    string help = command == root ? "pagepool --help" : $"pagepool {command.Name} --help";
    string message = string.Join(' ', error.Message.Split(['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    Console.Error.WriteLine($"pagepool: {message} (see '{help}')");
    return ExitCodes.BadArguments;
}
try
{
    return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
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
