using System.CommandLine;
using System.Diagnostics;
using System.Diagnostics.Tracing;
using Microsoft.Diagnostics.NETCore.Client;
using PagePool.Cli.Trace;
using PagePool.Diagnostics;

namespace PagePool.Cli;

/// <summary>
/// pagepool trace: run pagepool (or attach to a process) under an EventPipe session with the library's
/// EventSource and Meter, write a .nettrace that dotnet-trace and PerfView open, and summarise it. Everything the
/// command line names is checked before a process starts; a started child never outlives the trace.
/// </summary>
internal static class TraceCommand
{
    internal static Command Create()
    {
        var output = new Option<string?>("--output", "-o")
        {
            Description = "The .nettrace to write (default pagepool-TIME.nettrace); checked before anything starts.",
            HelpName = "FILE",
            CustomParser = r => Arguments.OutputPath(r, "--output", allowStdout: false),
        };
        var duration = new Option<TimeSpan?>("--duration", "-d")
        {
            Description = "Stop collecting after this long: 10s, 2m (default: when the traced pagepool exits; 10s with --pid).",
            HelpName = "TIME",
            CustomParser = r => Arguments.Time(r, "--duration"),
        };
        var pid = new Option<int?>("--pid", "-p")
        {
            Description = "Attach to a running .NET process instead of starting pagepool.",
            HelpName = "N",
            CustomParser = r => Arguments.Whole("--pid", 1, int.MaxValue)(r),
        };
        var hitPath = new Option<bool>("--hit-path") { Description = "Also record every pool hit (verbose; slows the traced process)." };
        var read = new Option<string?>("--read")
        {
            Description = "Only summarise an existing .nettrace (from this tool or dotnet-trace): exit 2 if it is not a trace, 1 if it is damaged.",
            HelpName = "FILE",
            CustomParser = r => Arguments.InputPath(r, "--read"),
        };
        var args = new Argument<string[]>("ARGS")
        {
            Description = "After --: the pagepool command to trace, for example: -- stress churn -d 5s.",
            HelpName = "ARGS",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var cmd = new Command("trace", "Trace pagepool (or --pid N) over EventPipe into a .nettrace and summarise its events and metrics.")
        {
            output, duration, pid, hitPath, read, args,
        };
        cmd.Validators.Add(r =>
        {
            // Which options were given, not their values (those are converted and checked by their parsers).
            string[] traced = r.GetResult(args)?.Tokens.Select(t => t.Value).ToArray() ?? [];
            int modes = (r.GetResult(pid) is not null ? 1 : 0) + (r.GetResult(read) is not null ? 1 : 0) + (traced.Length > 0 ? 1 : 0);
            if (modes != 1)
                r.AddError("trace: give exactly one of '-- <pagepool arguments>', --pid N or --read FILE.");
            else if (traced.Length > 0 && TracedProblem(traced) is { } problem)
                r.AddError(problem);
        });
        cmd.SetAction(r =>
        {
            var (stdout, stderr) = (r.InvocationConfiguration.Output, r.InvocationConfiguration.Error);
            if (r.GetValue(read) is { } file) return Summarise(file, stdout, stderr);
            string path = r.GetValue(output) ?? $"pagepool-{DateTime.Now:yyyyMMdd-HHmmss}.nettrace";
            return r.GetValue(pid) is { } p
                ? Attach(p, path, r.GetValue(duration) ?? TimeSpan.FromSeconds(10), r.GetValue(hitPath), stdout, stderr)
                : Launch(r.GetValue(args)!, path, r.GetValue(duration), r.GetValue(hitPath), stdout, stderr);
        });
        return cmd;
    }

    // The traced command line must itself be valid: checked by the same parser, before a process starts.
    private static string? TracedProblem(string[] traced)
    {
        // Options of trace come before "--", so a leading option-like token is one trace does not know.
        if (traced[0].StartsWith('-')) return $"trace: unknown option '{Arguments.Shorten(traced[0])}' (the command to trace follows --).";
        if (traced[0] == "trace") return "trace: the traced command cannot be 'trace' itself.";
        return Program.Problem(traced) is { } problem ? $"trace: the traced command is wrong: {problem}" : null;
    }

    private static EventPipeProvider[] Providers(bool hitPath) =>
    [
        new(PagePoolEventSource.ProviderName, EventLevel.Verbose,
            (long)(PagePoolEventSource.Keywords.Pool | PagePoolEventSource.Keywords.Caching | PagePoolEventSource.Keywords.Shrinker
                   | PagePoolEventSource.Keywords.Memory | (hitPath ? PagePoolEventSource.Keywords.HitPath : 0))),
        // The runtime's bridge from Meters to EventPipe: publishes each PagePool instrument once a second.
        new("System.Diagnostics.Metrics", EventLevel.Informational, 0x3, new Dictionary<string, string>
        {
            ["SessionId"] = Guid.NewGuid().ToString("N"),
            ["Metrics"] = PagePoolMetrics.MeterName,
            ["RefreshInterval"] = "1",
            ["MaxTimeSeries"] = "1000",
            ["MaxHistograms"] = "10",
        }),
    ];

    // Start pagepool suspended at its first instruction, connect, start the session, then let it run: no event lost.
    // Whatever happens after the start, the finally block ends the child: suspended, it would wait forever.
    private static int Launch(string[] arguments, string path, TimeSpan? duration, bool hitPath, TextWriter stdout, TextWriter stderr)
    {
        var psi = SelfProcess.StartInfo(arguments);
        psi.Environment["DOTNET_DefaultDiagnosticPortSuspend"] = "1";
        using var child = Process.Start(psi) ?? throw new UsageException("trace: could not start pagepool.");
        try
        {
            if (!DiagnosticPort.WaitFor(child.Id, TimeSpan.FromSeconds(10), () => !child.HasExited))
            {
                stderr.WriteLine($"pagepool: trace: process {child.Id} opened no diagnostic socket (is EventPipe disabled in it?).");
                return ExitCodes.Failed;
            }
            int rc = Collect(new DiagnosticsClient(child.Id), DiagnosticPort.Find(child.Id)!, path, hitPath, resume: true, stdout, stderr,
                waitUntilDone: () =>
                {
                    if (duration is { } d && !child.WaitForExit(d)) return;
                    child.WaitForExit();
                });
            if (!child.HasExited)
            {
                // --duration ended the trace first: the child's end is ours, not a failure of the child.
                child.Kill(entireProcessTree: true);
                child.WaitForExit();
                stderr.WriteLine("trace: --duration elapsed; pagepool was stopped");
                return rc;
            }
            stderr.WriteLine($"trace: pagepool exited with {child.ExitCode}");
            return rc != ExitCodes.Ok ? rc : child.ExitCode;
        }
        finally
        {
            End(child);
        }
    }

    private static void Resume(DiagnosticsClient client)
    {
        try
        {
            client.ResumeRuntime();
        }
        catch (Exception e) when (e is ServerNotAvailableException or ServerErrorException or IOException or TimeoutException or System.Net.Sockets.SocketException)
        {
            // Exiting, or already running and says so: either way it is not waiting for us.
        }
    }

    private static void End(Process child)
    {
        try
        {
            if (child.HasExited) return;
            child.Kill(entireProcessTree: true);
            child.WaitForExit(TimeSpan.FromSeconds(10));
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // It exited between the check and the kill.
        }
    }

    private static int Attach(int pid, string path, TimeSpan duration, bool hitPath, TextWriter stdout, TextWriter stderr)
    {
        string socket = DiagnosticPort.Find(pid)
            ?? throw new UsageException($"--pid: no .NET process {pid} with a diagnostic socket in {DiagnosticPort.Folder}.");
        Process? target = null;
        try { target = Process.GetProcessById(pid); } catch (ArgumentException) { }
        if (target is null) throw new UsageException($"--pid: no .NET process answers on {socket} (process {pid} is gone; the socket is stale).");
        using (target)
            return Collect(new DiagnosticsClient(pid), socket, path, hitPath, resume: false, stdout, stderr,
                waitUntilDone: () => target.WaitForExit(duration));
    }

    private static int Collect(DiagnosticsClient client, string socket, string path, bool hitPath, bool resume,
        TextWriter stdout, TextWriter stderr, Action waitUntilDone)
    {
        EventPipeSession session;
        try
        {
            session = client.StartEventPipeSession(Providers(hitPath), requestRundown: false, circularBufferMB: 256);
        }
        catch (Exception e) when (e is ServerNotAvailableException or IOException or TimeoutException or System.Net.Sockets.SocketException)
        {
            throw new UsageException($"no .NET process answers on {socket} ({e.GetType().Name}).");
        }
        using (session)
        {
            using var file = OutputFile.Create(path, stdout);
            var copy = session.EventStream.CopyToAsync(file.Stream);
            if (resume) Resume(client);
            stderr.WriteLine($"trace: collecting into {path}");
            waitUntilDone();
            try
            {
                session.Stop();
            }
            catch (Exception e) when (e is ServerNotAvailableException or IOException or EndOfStreamException or ServerErrorException)
            {
                // The process already exited: the runtime closed the session and flushed it.
            }
            if (!copy.Wait(TimeSpan.FromSeconds(30)))
                stderr.WriteLine("trace: the event stream did not end within 30 s after stopping; the file may be cut short.");
            file.Commit();
        }
        stderr.WriteLine($"trace: wrote {new FileInfo(path).Length:N0} bytes to {path}");
        return Summarise(path, stdout, stderr);
    }

    private static int Summarise(string path, TextWriter stdout, TextWriter stderr)
    {
        if (!File.Exists(path)) throw new UsageException($"--read: no file '{path}'.");
        TraceSummary summary;
        try
        {
            summary = TraceSummary.Of(path);
        }
        catch (Exception e) when (ReadFailure(e) is { } code)
        {
            stderr.WriteLine($"pagepool: trace: {path}: {e.Message}");
            return code;
        }
        summary.Print(stdout);
        return ExitCodes.Ok;
    }

    /// <summary>
    /// The one place that maps what the reader throws to an exit code: a file that is not a trace is bad input (2),
    /// a trace that is damaged is a failure (1). Anything else the reader throws while decoding is damage too.
    /// </summary>
    private static int? ReadFailure(Exception e) => e switch
    {
        NotANettraceException => ExitCodes.BadArguments,
        NettraceFormatException => ExitCodes.Failed, // DamagedNettraceException: a trace, cut short or corrupt
        IndexOutOfRangeException or ArgumentException or OverflowException or InvalidCastException or IOException => ExitCodes.Failed,
        _ => null,
    };
}
