using System.CommandLine;
using System.Diagnostics;
using System.Diagnostics.Tracing;
using Microsoft.Diagnostics.NETCore.Client;
using PagePool.Cli.Trace;
using PagePool.Diagnostics;

namespace PagePool.Cli;

/// <summary>
/// pagepool trace: run pagepool (or attach to a process) under an EventPipe session with the library's
/// EventSource and Meter, write a .nettrace that dotnet-trace and PerfView open, and summarise it.
/// </summary>
internal static class TraceCommand
{
    internal static Command Create()
    {
        var output = new Option<string?>("--output", "-o") { Description = "The .nettrace to write (default pagepool-TIME.nettrace).", HelpName = "FILE" };
        var duration = new Option<TimeSpan?>("--duration", "-d")
        {
            Description = "Stop collecting after this long: 10s, 2m (default: when the traced pagepool exits; 10s with --pid).",
            HelpName = "TIME",
            CustomParser = r =>
            {
                string t = r.Tokens[0].Value;
                if (Duration.TryParse(t, out var d)) return d;
                r.AddError($"--duration: '{t}' is not a duration; use 10s, 500ms, 2m or 1h.");
                return null;
            },
        };
        var pid = new Option<int?>("--pid", "-p") { Description = "Attach to a running .NET process instead of starting pagepool.", HelpName = "PID" };
        var hitPath = new Option<bool>("--hit-path") { Description = "Also record every pool hit (verbose; slows the traced process)." };
        var read = new Option<string?>("--read") { Description = "Only summarise an existing .nettrace (from this tool or dotnet-trace).", HelpName = "FILE" };
        var args = new Argument<string[]>("pagepool-arguments")
        {
            Description = "After --: the pagepool command to trace, for example: -- stress churn -d 5s.",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var cmd = new Command("trace", "Trace pagepool (or --pid N) over EventPipe into a .nettrace and summarise its events and metrics.")
        {
            output, duration, pid, hitPath, read, args,
        };
        cmd.Validators.Add(r =>
        {
            int modes = (r.GetResult(pid) is not null ? 1 : 0) + (r.GetResult(read) is not null ? 1 : 0) + (r.GetValue(args) is { Length: > 0 } ? 1 : 0);
            if (modes != 1)
                r.AddError("trace: give exactly one of '-- <pagepool arguments>', --pid N or --read FILE.");
        });
        cmd.SetAction(r =>
        {
            if (r.GetValue(read) is { } file) return Summarise(file);
            string path = r.GetValue(output) ?? $"pagepool-{DateTime.Now:yyyyMMdd-HHmmss}.nettrace";
            return r.GetValue(pid) is { } p
                ? Attach(p, path, r.GetValue(duration) ?? TimeSpan.FromSeconds(10), r.GetValue(hitPath))
                : Launch(r.GetValue(args)!, path, r.GetValue(duration), r.GetValue(hitPath));
        });
        return cmd;
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
    private static int Launch(string[] arguments, string path, TimeSpan? duration, bool hitPath)
    {
        var psi = SelfProcess.StartInfo(arguments);
        psi.Environment["DOTNET_DefaultDiagnosticPortSuspend"] = "1";
        using var child = Process.Start(psi) ?? throw new UsageException("trace: could not start pagepool.");
        if (!DiagnosticPort.WaitFor(child.Id, TimeSpan.FromSeconds(10), () => !child.HasExited))
        {
            if (!child.HasExited) child.Kill();
            Console.Error.WriteLine($"pagepool: trace: process {child.Id} opened no diagnostic socket (is EventPipe disabled in it?).");
            return ExitCodes.Failed;
        }
        int rc = Collect(new DiagnosticsClient(child.Id), path, hitPath, resume: true,
            waitUntilDone: () =>
            {
                if (duration is { } d && !child.WaitForExit(d)) return;
                child.WaitForExit();
            });
        if (!child.HasExited) { child.Kill(entireProcessTree: true); child.WaitForExit(); }
        Console.Error.WriteLine($"trace: pagepool exited with {child.ExitCode}");
        return rc != ExitCodes.Ok ? rc : child.ExitCode;
    }

    private static int Attach(int pid, string path, TimeSpan duration, bool hitPath)
    {
        if (DiagnosticPort.Find(pid) is null)
            throw new UsageException($"--pid: no .NET process {pid} with a diagnostic socket in {Path.GetTempPath()}.");
        Process? target = null;
        try { target = Process.GetProcessById(pid); } catch (ArgumentException) { }
        return Collect(new DiagnosticsClient(pid), path, hitPath, resume: false,
            waitUntilDone: () => { if (target is null) Thread.Sleep(duration); else target.WaitForExit(duration); });
    }

    private static int Collect(DiagnosticsClient client, string path, bool hitPath, bool resume, Action waitUntilDone)
    {
        using var session = client.StartEventPipeSession(Providers(hitPath), requestRundown: false, circularBufferMB: 256);
        using var file = File.Create(path);
        var copy = session.EventStream.CopyToAsync(file);
        if (resume) client.ResumeRuntime();
        Console.Error.WriteLine($"trace: collecting into {path}");
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
            Console.Error.WriteLine("trace: the event stream did not end within 30 s after stopping; the file may be cut short.");
        file.Flush();
        file.Close();
        Console.Error.WriteLine($"trace: wrote {new FileInfo(path).Length:N0} bytes to {path}");
        return Summarise(path);
    }

    private static int Summarise(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"--read: no file '{path}'.");
        TraceSummary summary;
        try
        {
            summary = TraceSummary.Of(path);
        }
        catch (NettraceFormatException e)
        {
            Console.Error.WriteLine($"pagepool: trace: {path}: {e.Message}");
            return ExitCodes.Failed;
        }
        summary.Print(Console.Out);
        return ExitCodes.Ok;
    }
}
