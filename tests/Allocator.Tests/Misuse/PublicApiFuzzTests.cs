using System.Reflection;
using PagePool.Buffers;
using PagePool.Dma;
using PagePool.Tt;
using PagePool.Memory;
using PagePool.Pool;
using PagePool.Shrinker;
using Xunit;

namespace PagePool.Allocator.Tests.Misuse;

/// <summary>
/// Every public constructor and method of the library (and of PagePool.Shrinker) is called by reflection with
/// each parameter in turn replaced by invalid values (null, negative, zero, huge, NaN, undefined enum values,
/// null, stale, foreign and raw-only page handles, options with one bad field), on live and on disposed
/// receivers. Each call must return or raise a typed error: never a NullReferenceException, an index, cast or
/// overflow error, or a hang. Afterwards nothing is leaked: every memory space gives back every page.
/// Methods taking spans cannot be called by reflection; the misuse generator covers them.
/// </summary>
public sealed class PublicApiFuzzTests(ITestOutputHelper output)
{
    private static readonly Type[] Typed =
    [
        typeof(ArgumentException), typeof(ObjectDisposedException), typeof(InvalidOperationException), typeof(PagePoolException),
        typeof(FormatException), typeof(NotSupportedException), typeof(IOException), typeof(UnauthorizedAccessException),
    ];
    private static readonly Type[] NeverTyped =
    [
        typeof(NullReferenceException), typeof(IndexOutOfRangeException), typeof(InvalidCastException), typeof(OverflowException),
        typeof(DivideByZeroException), typeof(OutOfMemoryException), typeof(TypeInitializationException), typeof(KeyNotFoundException),
    ];

    /// <summary>Live objects one method is fuzzed against; all disposed afterwards, and checked for leaks.</summary>
    private sealed class Fixture : IDisposable
    {
        internal readonly PhysicalMemory Memory = new(new MemoryOptions { ArenaBytes = 4L << 20, Dma32Bytes = 8L << 20, NormalBytes = 32L << 20 });
        internal readonly PhysicalMemory Other = new(new MemoryOptions { ArenaBytes = 4L << 20, Dma32Bytes = 0, NormalBytes = 8L << 20 });
        internal readonly PoolAllocator Pool;
        internal readonly PageMemoryPool Buffers;
        internal readonly ShrinkerRegistry Registry = new();
        internal readonly ReclaimThread Reclaim;
        internal readonly PageHandle Stale, Foreign, Dead;
        private DmaPlatform? _platform;
        private DmaDevice? _device;
        private SwapStore? _store;
        private BufferAccounting? _accounting;
        internal DmaPlatform Platform => _platform ??= new DmaPlatform(Memory, new DmaPlatformOptions { Checker = true, SwiotlbBytes = 2L << 20 });
        internal DmaDevice Device => _device ??= Platform.CreateDevice(new DmaDeviceOptions { Name = "fuzz", OpsKind = DmaOpsKind.Iommu });
        internal SwapStore Store => _store ??= SwapStore.CreateMemfd();
        internal BufferAccounting Accounting => _accounting ??= new BufferAccounting(Pool, Store);
        private readonly List<PageHandle> _handed = new();
        private readonly List<IDisposable> _created = new();

        internal Fixture()
        {
            Pool = new PoolAllocator(Memory, new PoolOptions { LimitBytes = 1 << 20 }, Registry);
            Buffers = new PageMemoryPool(Pool);
            Reclaim = new ReclaimThread(Registry, []);
            Stale = Memory.AllocateBlock(Zone.Normal, 0);
            Memory.FreeBlock(Stale);
            Foreign = Other.AllocateBlock(Zone.Normal, 0);
            using (var dead = new PhysicalMemory(new MemoryOptions { ArenaBytes = 4L << 20, Dma32Bytes = 0, NormalBytes = 8L << 20 }))
                Dead = dead.AllocateBlock(Zone.Normal, 0);
        }

        /// <summary>A block held by the caller, fresh for each call, freed at the end if the call left it held.</summary>
        internal PageHandle Held()
        {
            var h = Memory.AllocateBlock(Zone.Normal, 0);
            _handed.Add(h);
            return h;
        }

        internal void Keep(object? result, object?[] args, object? receiver)
        {
            // Memory a call handed out that the caller must give back: the fuzzer gives it back, as a caller would.
            if (result is DmaCoherentBlock coherent && receiver is DmaDevice device) _created.Add(new Giveback(() => device.FreeCoherent(coherent)));
            if (result is DmaPage page && receiver is DmaPagePool pool) _created.Add(new Giveback(() => pool.Free(page)));
            if (result is IDisposable d && !ReferenceEquals(result, Memory) && !ReferenceEquals(result, Pool)) _created.Add(d);
            // A page a call handed to the caller is the caller's to give back: the fuzzer gives it back at the end,
            // to the pool after the pool was disposed (which must send it to the system), else to the space.
            if (result is PageHandle h && !h.IsNull)
                _fromCalls.Add((h, args.OfType<CachingMode>().Cast<CachingMode?>().FirstOrDefault()));
        }

        private readonly List<(PageHandle Handle, CachingMode? Caching)> _fromCalls = new();

        public void Dispose()
        {
            for (int i = _created.Count - 1; i >= 0; i--) Quietly(_created[i].Dispose);
            if (_device is not null) Quietly(_device.Dispose);
            if (_platform is not null) Quietly(_platform.Dispose);
            if (_store is not null) Quietly(_store.Dispose);
            Reclaim.Dispose();
            Buffers.Dispose();
            Pool.Dispose();
            foreach (var (h, caching) in _fromCalls)
            {
                try
                {
                    if (caching is { } c && c <= CachingMode.Uncached) Pool.ReleasePage(h, c);
                    else Memory.FreeBlock(h);
                }
                catch (PagePoolException) { }
                catch (ObjectDisposedException) { }
            }
            foreach (var h in _handed)
            {
                try { Memory.FreeBlock(h); } catch (PagePoolException) { } catch (ObjectDisposedException) { }
            }
            try { Other.FreeBlock(Foreign); } catch (ObjectDisposedException) { }
        }

        // Teardown of what the fuzzer built: a typed refusal (already disposed, say) is not the fuzzer's business.
        private static void Quietly(Action dispose)
        {
            try { dispose(); } catch (PagePoolException) { } catch (ObjectDisposedException) { } catch (InvalidOperationException) { }
        }

        // A disposed space gave everything back to the system: nothing of it can be leaked.
        internal long LeakedBytes() => Used(Memory) + Used(Other);

        private static long Used(PhysicalMemory m)
        {
            try { return m.UsedBytes(Zone.Normal) + m.UsedBytes(Zone.Dma32); }
            catch (ObjectDisposedException) { return 0; }
        }

        internal void Free()
        {
            Memory.Dispose();
            Other.Dispose();
        }

        /// <summary>An instance of <paramref name="t"/> to call methods on, or null when the fuzzer has none.</summary>
        internal object? Receiver(Type t) =>
            t == typeof(PhysicalMemory) ? Memory : t == typeof(PoolAllocator) ? Pool : t == typeof(PageMemoryPool) ? Buffers
            : t == typeof(ShrinkerRegistry) ? Registry : t == typeof(ReclaimThread) ? Reclaim
            : t == typeof(GcPressureSource) ? Made(new GcPressureSource())
            : t == typeof(PsiPressureSource) ? Made(new PsiPressureSource())
            : t == typeof(CgroupPressureSource) ? Made(new CgroupPressureSource(FakeCgroup(), 2))
            : t == typeof(PageHandle) ? Held()
            : t == typeof(DmaPlatform) ? Platform
            : t == typeof(DmaDevice) ? Device
            : t == typeof(DmaEngine) ? Device.Engine
            : t == typeof(DmaChecker) ? Platform.Checker
            : t == typeof(DmaPagePool) ? Made(new DmaPagePool(Device))
            : t == typeof(DmaScatterlist) ? new DmaScatterlist()
            : t == typeof(IovaAllocator) ? new IovaAllocator(1)
            : t == typeof(SwapStore) ? Store
            : t == typeof(SwapFaults) ? Store.Faults
            : t == typeof(BufferAccounting) ? Accounting
            : t == typeof(PageArray) ? Made(new PageArray(Accounting, 16, CachingMode.WriteBack))
            : t == typeof(VramRegion) ? Made(new VramRegion(4L << 20))
            : t.IsClass && t.Namespace?.StartsWith("PagePool", StringComparison.Ordinal) == true && t.Name.EndsWith("Options", StringComparison.Ordinal)
                && t.GetConstructor(Type.EmptyTypes) is { } options ? options.Invoke(null)
            : t == typeof(MemAvailablePressureSource) ? Made(new MemAvailablePressureSource())
            : null;

        // A cgroup v2 directory with usage and limit files, as the kernel lays them out.
        private static string FakeCgroup()
        {
            string dir = Path.Combine(Path.GetTempPath(), $"pagepool-fuzz-cgroup-{Environment.ProcessId}");
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "memory.current"), "1048576\n");
            File.WriteAllText(Path.Combine(dir, "memory.max"), "1073741824\n");
            File.WriteAllText(Path.Combine(dir, "memory.high"), "max\n");
            return dir;
        }

        private object Made(IDisposable d)
        {
            _created.Add(d);
            return d;
        }
    }

    // Receivers the fuzzer cannot build (abstract bases, exceptions) are covered through their concrete types.
    private static IEnumerable<MethodBase> EntryPoints()
    {
        foreach (var asm in new[] { typeof(PhysicalMemory).Assembly, typeof(ShrinkerRegistry).Assembly })
            foreach (var t in asm.GetExportedTypes())
            {
                if (typeof(Exception).IsAssignableFrom(t) || t.IsInterface || typeof(Delegate).IsAssignableFrom(t)) continue;
                if (t.Namespace == "PagePool.Diagnostics") continue; // event writers: any value is a legal payload
                foreach (var c in t.GetConstructors()) yield return c;
                foreach (var m in t.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
                    if (!m.IsSpecialName || m.Name.StartsWith("set_", StringComparison.Ordinal) || m.Name.StartsWith("get_", StringComparison.Ordinal))
                        yield return m;
            }
    }

    private static bool Callable(MethodBase m)
        => !m.IsAbstract && !m.ContainsGenericParameters && m.GetParameters().All(p =>
            !p.ParameterType.IsByRefLike && !p.ParameterType.IsPointer && !(p.ParameterType.IsByRef && p.ParameterType.GetElementType()!.IsByRefLike));

    private static readonly NullabilityInfoContext Nullability = new();

    /// <summary>A value a parameter of this type accepts, to hold the other parameters legal while one is bad.</summary>
    private static object? Valid(ParameterInfo p, Fixture f)
    {
        var t = p.ParameterType.IsByRef ? p.ParameterType.GetElementType()! : p.ParameterType;
        if (p.HasDefaultValue && p.DefaultValue is not null) return p.DefaultValue;
        if (t == typeof(PageHandle)) return f.Held();
        if (t == typeof(int)) return 1;
        if (t == typeof(long)) return 1L;
        if (t == typeof(ulong)) return 0x1000UL;
        if (t == typeof(double)) return 0.5;
        if (t == typeof(bool)) return false;
        if (t == typeof(string)) return p.Name is "path" or "meminfoPath" ? "/proc/meminfo" : "pagepool";
        if (t.IsEnum) return Enum.GetValues(t).GetValue(0);
        if (Nullable.GetUnderlyingType(t) is not null) return null;
        if (t == typeof(TimeSpan)) return TimeSpan.FromMilliseconds(50);
        if (t.IsArray) return Array.CreateInstance(t.GetElementType()!, 0);
        if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(IEnumerable<>))
            return Array.CreateInstance(t.GetGenericArguments()[0], 0);
        if (f.Receiver(t) is { } r) return r;
        if (t.IsClass && t.GetConstructor(Type.EmptyTypes) is { } ctor && t.Namespace?.StartsWith("PagePool", StringComparison.Ordinal) == true)
            return ctor.Invoke(null); // options objects: their defaults are valid
        if (t == typeof(IShrinker)) return f.Pool.Shrinker;
        if (t == typeof(Exception)) return new InvalidOperationException("x");
        return t.IsValueType ? Activator.CreateInstance(t) : null;
    }

    /// <summary>The bad values tried for a parameter of this type.</summary>
    private static IEnumerable<object?> Invalid(ParameterInfo p, Fixture f)
    {
        var t = p.ParameterType;
        if (t.IsByRef) yield break; // out parameters carry nothing in
        if (t == typeof(PageHandle))
        {
            yield return PageHandle.Null;
            yield return new PageHandle(f.Held().Value); // the bits of a live block, with no space attached
            yield return f.Stale;
            yield return f.Foreign;
            yield return f.Dead;
            yield return new PageHandle(ulong.MaxValue);
            yield break;
        }
        if (t == typeof(int)) { foreach (var v in new object[] { -1, 0, int.MaxValue, int.MinValue }) yield return v; yield break; }
        if (t == typeof(long)) { foreach (var v in new object[] { -1L, 0L, long.MaxValue, long.MinValue }) yield return v; yield break; }
        if (t == typeof(ulong)) { yield return 0UL; yield return ulong.MaxValue; yield break; }
        if (t == typeof(double)) { foreach (var v in new object[] { double.NaN, -1.0, double.PositiveInfinity, 0.0 }) yield return v; yield break; }
        if (t == typeof(string)) { yield return ""; yield return "\0"; yield return new string('x', 5000); yield return "/nonexistent/dir"; }
        if (t.IsEnum)
        {
            yield return Enum.ToObject(t, 99);
            yield return Enum.ToObject(t, Enum.GetUnderlyingType(t) == typeof(byte) ? 255 : -1);
            yield break;
        }
        if (t == typeof(TimeSpan) || t == typeof(TimeSpan?)) { yield return TimeSpan.Zero; yield return TimeSpan.FromTicks(-1); yield return TimeSpan.MaxValue; yield break; }
        if (t == typeof(long?)) { yield return -1L; yield return long.MaxValue; yield break; }
        if (!t.IsValueType && Nullability.Create(p).WriteState != NullabilityState.Nullable) yield return null;
        // An options object with one bad field at a time.
        if (t.IsClass && t.Namespace?.StartsWith("PagePool", StringComparison.Ordinal) == true && t.GetConstructor(Type.EmptyTypes) is { } ctor)
            foreach (var prop in t.GetProperties().Where(q => q.SetMethod is { IsPublic: true }))
                foreach (var bad in Invalid(prop.SetMethod!.GetParameters()[0], f))
                {
                    var o = ctor.Invoke(null);
                    prop.SetValue(o, bad);
                    yield return o;
                }
    }

    [Fact]
    public void Every_public_entry_point_answers_invalid_arguments_with_a_typed_error_and_leaks_nothing()
    {
        int calls = 0, typed = 0, returned = 0, entryPoints = 0;
        var failures = new List<string>();
        var skipped = new SortedSet<string>();
        foreach (var m in EntryPoints())
        {
            if (m.IsAbstract) continue; // called through the concrete types
            if (!Callable(m)) { skipped.Add($"{m.DeclaringType!.Name}.{m.Name} (span or pointer parameters)"); continue; }
            var f = new Fixture();
            try
            {
                object? receiver = m.IsStatic || m is ConstructorInfo ? null : f.Receiver(m.DeclaringType!);
                if (!m.IsStatic && m is not ConstructorInfo && receiver is null) { skipped.Add($"{m.DeclaringType!.Name} (no instance to call on)"); continue; }
                entryPoints++;
                var ps = m.GetParameters();
                var trials = new List<object?[]>();
                for (int i = 0; i < ps.Length; i++)
                    foreach (var bad in Invalid(ps[i], f))
                    {
                        var args = ps.Select(p => Valid(p, f)).ToArray();
                        args[i] = bad;
                        trials.Add(args);
                    }
                if (ps.Length == 0) trials.Add([]);
                foreach (var args in trials)
                {
                    calls++;
                    switch (Call(m, receiver, args, f, out string outcome))
                    {
                        case Outcome.Returned: returned++; break;
                        case Outcome.Typed: typed++; break;
                        default: failures.Add($"{m.DeclaringType!.Name}.{m.Name}({string.Join(", ", args.Select(Show))}): {outcome}"); break;
                    }
                }
                // The same method on a disposed receiver: ObjectDisposedException or harmless, never a crash.
                if (receiver is IDisposable d && m is MethodInfo && m.Name != "Dispose")
                {
                    var args = ps.Select(p => Valid(p, f)).ToArray();
                    d.Dispose();
                    calls++;
                    if (Call(m, receiver, args, f, out string outcome) == Outcome.Bad)
                        failures.Add($"{m.DeclaringType!.Name}.{m.Name} on a disposed receiver: {outcome}");
                }
            }
            finally
            {
                f.Dispose();
                long leaked = f.LeakedBytes();
                if (leaked != 0) failures.Add($"after {m.DeclaringType!.Name}.{m.Name}: {leaked} bytes still handed out");
                f.Free();
            }
        }
        string figures = $"public API fuzz: {entryPoints} entry points, {calls} calls: {typed} typed errors, {returned} returned, {failures.Count} misbehaved";
        output.WriteLine(figures);
        if (Environment.GetEnvironmentVariable("PAGEPOOL_FUZZ_REPORT") is { Length: > 0 } report) File.AppendAllText(report, figures + "\n" + string.Join("\n", skipped.Select(x => "  not called: " + x)) + "\n");
        foreach (var s in skipped) output.WriteLine($"not called by reflection: {s}");
        Assert.True(entryPoints > 40, $"only {entryPoints} entry points were found");
        Assert.True(failures.Count == 0, string.Join("\n", failures.Take(40)));
    }

    private enum Outcome { Returned, Typed, Bad }

    private sealed class Giveback(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    private static Outcome Call(MethodBase m, object? receiver, object?[] args, Fixture f, out string outcome)
    {
        Exception? error = null;
        object? result = null;
        var t = new Thread(() =>
        {
            try { result = m is ConstructorInfo c ? c.Invoke(args) : m.Invoke(receiver, args); }
            catch (TargetInvocationException e) { error = e.InnerException; }
            catch (Exception e) { error = e; }
        }, 16 << 20);
        t.Start();
        if (!t.Join(TimeSpan.FromSeconds(10)))
        {
            outcome = "did not return within 10 s";
            return Outcome.Bad;
        }
        f.Keep(result, args, receiver);
        if (error is null) { outcome = "returned"; return Outcome.Returned; }
        outcome = $"{error.GetType().Name}: {error.Message}";
        if (NeverTyped.Any(n => n.IsInstanceOfType(error)) || !Typed.Any(n => n.IsInstanceOfType(error))) return Outcome.Bad;
        return Outcome.Typed;
    }

    private static string Show(object? v) => v switch
    {
        null => "null",
        string s => s.Length > 20 ? $"\"{s[..8]}...\"({s.Length})" : $"\"{s}\"",
        _ => v.ToString() ?? "?",
    };
}

/// <summary>Found by the fuzzer: the first block of a space whose 8-bit tag wrapped to 0 had the null handle's value.</summary>
public sealed class SpaceTagTests
{
    [Fact]
    public void The_first_block_of_every_space_is_never_the_null_handle_however_many_spaces_come_and_go()
    {
        for (int i = 0; i < 300; i++)
        {
            using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 2L << 20, Dma32Bytes = 0, NormalBytes = 2L << 20 });
            var h = memory.AllocateBlock(Zone.Normal, 0);
            Assert.False(h.IsNull, $"space {i}: a live block has the null handle's value");
            Assert.Equal(h, memory.HandleOf(h.Value));
            memory.FreeBlock(h);
        }
    }
}
