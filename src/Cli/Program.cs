using System.CommandLine;
using System.CommandLine.Parsing;

namespace PagePool.Cli;

/// <summary>
/// pagepool: stress, measure and inspect PagePool. System.CommandLine parses and validates; every failure is one
/// line on standard error, "pagepool: ...", and an exit code: 0 success, 1 a run failed (verification, invariant,
/// an error from the library, a damaged trace), 2 bad arguments (nothing ran), 3 out of memory, address space or
/// threads. Response files (@file) are off: every argument is on the command line.
/// </summary>
internal static class Program
{
    private static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>The parser's settings: no response files (a pagepool command line is short, and '@' is then literal).</summary>
    internal static ParserConfiguration Parsing { get; } = new() { ResponseFileTokenReplacer = null };

    /// <summary>The command tree, made afresh (symbols belong to one tree).</summary>
    internal static RootCommand CreateRoot()
    {
        var root = new RootCommand("pagepool: stress, benchmark and inspect the PagePool native page pool.");
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(StressCommand.Create());
        root.Subcommands.Add(TraceCommand.Create());
        root.Subcommands.Add(GateCommand.Create());
        return root;
    }

    /// <summary>Parse and validate only: the error line pagepool would print, or null when the command would run.</summary>
    internal static string? Check(IReadOnlyList<string> args)
    {
        var parse = CreateRoot().Parse(args, Parsing);
        return parse.Errors.Count > 0 ? ErrorLine(parse) : null;
    }

    /// <summary>Parse and validate only: what is wrong, without the "pagepool: " and the help pointer, or null.</summary>
    internal static string? Problem(IReadOnlyList<string> args)
    {
        var parse = CreateRoot().Parse(args, Parsing);
        return parse.Errors.Count > 0 ? ErrorMessage(parse) : null;
    }

    /// <summary>Run pagepool in this process, writing to the given streams; returns the exit code.</summary>
    internal static int Run(IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        var parse = CreateRoot().Parse(args, Parsing);
        if (parse.Errors.Count > 0) return Fail(stderr, ErrorLine(parse), ExitCodes.BadArguments);
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (UsageException e)
        {
            return Fail(stderr, $"pagepool: {e.Message} (see '{HelpCommand(parse)}')", ExitCodes.BadArguments);
        }
        catch (Exception e) when (ExitCodes.IsResourceExhaustion(e))
        {
            return Fail(stderr, $"pagepool: out of resources: {OneLine(e.Message)}", ExitCodes.ResourceExhausted);
        }
        catch (PagePoolException e)
        {
            return Fail(stderr, $"pagepool: {OneLine(e.Message)}", ExitCodes.Failed);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A result that could not be written after all (the disk filled during the run): the path was checked.
            return Fail(stderr, $"pagepool: {OneLine(e.Message)}", ExitCodes.Failed);
        }
    }

    private static int Fail(TextWriter stderr, string line, int code)
    {
        stderr.WriteLine(line);
        stderr.Flush();
        return code;
    }

    // The library's own message for the first error (an unknown token says most), on one line, with where to look.
    private static string ErrorLine(ParseResult parse) => $"pagepool: {ErrorMessage(parse)} (see '{HelpCommand(parse)}')";

    private static string HelpCommand(ParseResult parse)
        => parse.CommandResult.Command is RootCommand ? "pagepool --help" : $"pagepool {parse.CommandResult.Command.Name} --help";

    private static string ErrorMessage(ParseResult parse)
    {
        // An unknown token says most, then what an option or argument's own parser found, then the command's checks.
        var error = parse.Errors.FirstOrDefault(e => parse.UnmatchedTokens.Any(t => e.Message.Contains($"'{t}'", StringComparison.Ordinal)))
                    ?? parse.Errors.FirstOrDefault(e => e.SymbolResult is OptionResult or ArgumentResult)
                    ?? parse.Errors[0];
        return OneLine(error.Message);
    }

    /// <summary>A message on one line: its lines and tabs joined by single spaces.</summary>
    internal static string OneLine(string message)
        => string.Join(' ', message.Split(['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
