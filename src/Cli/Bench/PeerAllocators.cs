using System.Runtime.InteropServices;

namespace PagePool.Cli.Bench;

/// <summary>
/// The allocators a .NET developer could use instead of the pool for a zeroed, page-aligned 4 KiB buffer:
/// NativeMemory, and mimalloc and jemalloc from their Debian packages, loaded at run time and called through
/// unmanaged function pointers without a GC transition (the fastest honest call from .NET). A peer whose library
/// is not installed is skipped with a note saying which package provides it.
/// </summary>
internal static unsafe class PeerAllocators
{
    private const int MallocxZero = 0x40;              // MALLOCX_ZERO
    private const int MallocxAlign4096 = 12;           // MALLOCX_ALIGN(4096) = log2(4096)
    private const string JemallocZalloc = "mallocx(4096, ALIGN(4096)|ZERO) + dallocx (Debian libjemalloc2)";
    private const string JemallocAlloc = "mallocx(4096, ALIGN(4096)) + dallocx, no zeroing (Debian libjemalloc2)";
    private const string InChild = "; measured in a child started with a larger static TLS reserve";

    internal static void Run(BenchContext ctx)
    {
        int ops = ctx.Quick ? 200_000 : 1_000_000;
        var native = ctx.NsPerOp("baseline.native_aligned_zero.ns", ops, () =>
        {
            void* p = NativeMemory.AlignedAlloc(4096, 4096);
            NativeMemory.Clear(p, 4096);
            NativeMemory.AlignedFree(p);
        });
        ctx.Add("baseline.native_aligned_zero.ns", native, "NativeMemory.AlignedAlloc(4096, 4096) + Clear + AlignedFree");

        if (TryLoad("libmimalloc.so.2", "libmimalloc2.0", ctx, out nint mi, out _))
        {
            var zalloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*>)NativeLibrary.GetExport(mi, "mi_zalloc_aligned");
            var malloc = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, nuint, void*>)NativeLibrary.GetExport(mi, "mi_malloc_aligned");
            var free = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, void>)NativeLibrary.GetExport(mi, "mi_free");
            ctx.Add("baseline.mimalloc_zalloc.ns", ctx.NsPerOp("baseline.mimalloc_zalloc.ns", ops, () => free(zalloc(4096, 4096))),
                "mi_zalloc_aligned(4096, 4096) + mi_free (Debian libmimalloc2.0)");
            // No zeroing: the allocator's own overhead, what pool.hit.wb.noclear.ns is held to.
            ctx.Add("baseline.mimalloc_alloc_4k.ns", ctx.NsPerOp("baseline.mimalloc_alloc_4k.ns", ops, () => free(malloc(4096, 4096))),
                "mi_malloc_aligned(4096, 4096) + mi_free, no zeroing (Debian libmimalloc2.0)");
        }
        if (TryLoad("libjemalloc.so.2", "libjemalloc2", ctx, out nint je, out string? error))
        {
            var mallocx = (delegate* unmanaged[Cdecl, SuppressGCTransition]<nuint, int, void*>)NativeLibrary.GetExport(je, "mallocx");
            var dallocx = (delegate* unmanaged[Cdecl, SuppressGCTransition]<void*, int, void>)NativeLibrary.GetExport(je, "dallocx");
            ctx.Add("baseline.jemalloc_zalloc.ns", ctx.NsPerOp("baseline.jemalloc_zalloc.ns", ops, () => dallocx(mallocx(4096, MallocxAlign4096 | MallocxZero), 0)),
                JemallocZalloc);
            ctx.Add("baseline.jemalloc_alloc_4k.ns", ctx.NsPerOp("baseline.jemalloc_alloc_4k.ns", ops, () => dallocx(mallocx(4096, MallocxAlign4096), 0)),
                JemallocAlloc);
        }
        else if (error is not null && error.Contains("static TLS", StringComparison.Ordinal))
        {
            MeasureInChild(ctx);
        }
    }

    // jemalloc uses initial-exec TLS, which glibc can only place in a late dlopen if the process started with a
    // larger static TLS reserve. So the same binary measures it in a child started with that reserve, in this run.
    private static void MeasureInChild(BenchContext ctx)
    {
        const string Tunable = "glibc.rtld.optional_static_tls=65536";
        if (Environment.GetEnvironmentVariable("GLIBC_TUNABLES")?.Contains(Tunable, StringComparison.Ordinal) == true)
        {
            ctx.Note("libjemalloc.so.2 cannot be loaded even with a larger static TLS reserve; jemalloc not measured.");
            return;
        }
        string json = Path.Combine(Path.GetTempPath(), $"pagepool-peers-{Environment.ProcessId}.json");
        List<string> args = ["bench", "--only", "peers", "--json", json, "--repeat", ctx.Reps.ToString(System.Globalization.CultureInfo.InvariantCulture)];
        if (ctx.Quick) args.Add("--quick");
        var psi = SelfProcess.StartInfo(args);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.Environment["GLIBC_TUNABLES"] = Tunable;
        try
        {
            using var child = System.Diagnostics.Process.Start(psi)!;
            child.StandardOutput.ReadToEnd();
            child.StandardError.ReadToEnd();
            child.WaitForExit();
            var childResults = child.ExitCode == 0 ? BenchResults.Load(json) : null;
            foreach (var (name, about) in new[] { ("baseline.jemalloc_zalloc.ns", JemallocZalloc), ("baseline.jemalloc_alloc_4k.ns", JemallocAlloc) })
            {
                if (childResults is not null && childResults.Samples.TryGetValue(name, out var samples))
                    ctx.Add(name, new Samples(samples), about + InChild);
                else
                    ctx.Note($"jemalloc: the measuring child process did not report {name}.");
            }
        }
        catch (Exception e) when (e is IOException or System.ComponentModel.Win32Exception or BenchResultsException)
        {
            ctx.Note($"jemalloc: the measuring child process failed ({e.Message}).");
        }
        finally
        {
            File.Delete(json);
        }
    }

    private static bool TryLoad(string library, string package, BenchContext ctx, out nint handle, out string? error)
    {
        error = null;
        try
        {
            handle = NativeLibrary.Load(library);
            return true;
        }
        catch (DllNotFoundException e)
        {
            handle = 0;
            error = e.Message;
            if (!File.Exists("/usr/lib/x86_64-linux-gnu/" + library) && !File.Exists("/lib/x86_64-linux-gnu/" + library))
                ctx.Note($"{library} is not installed: install the Debian package {package} (bash .ci/install-deps) to measure it.");
            else if (!e.Message.Contains("static TLS", StringComparison.Ordinal))
                ctx.Note($"{library} is installed but could not be loaded: {e.Message}");
            return false;
        }
    }
}
