using PagePool.Memory;

namespace PagePool.Allocator.Tests.Model;

/// <summary>
/// What a step does. Buffers, arrays, mappings and devices are named by index modulo the live (or released) count
/// at run time, so a sequence stays meaningful when the shrinker deletes steps from it.
/// </summary>
public enum ModelOpKind
{
    // The pool: buffers of pages held by the caller.
    Allocate, Release, ReleaseStale, ReleaseWrongCaching, ReleaseForeign, ReleaseTwiceInOneCall, ReleaseInvalidCaching,
    SwitchCaching, Write, Check, Shrink,

    // Streaming DMA mappings of pool buffers, and the devices' engines reading and writing through them.
    DmaMap, DmaMapAgain, DmaUnmap, DmaUnmapWrongSize, DmaUnmapUnmapped, DmaSync, DmaSyncPastEnd,
    DeviceWrite, DeviceRead, DeviceStray, CpuRead,
    // Coherent DMA memory: allocated for a device (zeroed, as dma_alloc_coherent is), reached by CPU and device alike.
    CoherentAlloc, CoherentFree, CoherentAccess,

    // Page arrays (TTs): their lifecycle, contents, binding to devices, swap, VRAM, and reclaim.
    TtCreate, TtPopulate, TtUnpopulate, TtPurge, TtWrite, TtRead, TtSwapOut, TtBind, TtUnbind, TtMove,
    TtToVram, TtToSystem, TtDeviceWrite, TtDeviceRead, TtDestroy, TtShrink,
}

/// <summary>
/// One generated step: a kind and the numbers it draws on (their meaning depends on the kind). <see cref="Tag"/> is
/// the step's number in the generated sequence, which names what it creates; a step whose <see cref="Pin"/> is set
/// acts on what the step tagged so acts on, or on nothing once that step is gone (as a shrunk sequence needs: a
/// step that names its target by index would land on another one when earlier steps are deleted).
/// </summary>
public readonly record struct ModelOp(ModelOpKind Kind, int A, int B, int C, CachingMode Caching, Zone Zone, int Tag = 0, int Pin = ModelOp.Unpinned)
{
    /// <summary>The target is the live one at index A modulo the count.</summary>
    public const int Unpinned = -1;

    /// <summary>A pinned step that found no target when it was pinned: it acts on nothing.</summary>
    public const int Nothing = -2;

    public override string ToString() => $"[{Tag}] " + (Pin == Unpinned ? Describe() : Describe().Replace($"#{A}", Pin == Nothing ? "none" : $"@{Pin}"));

    private string Describe() => Kind switch
    {
        ModelOpKind.Allocate => $"Allocate(pages: {A}, {Caching}, {Zone}{(B != 0 ? ", NoClear" : "")})",
        ModelOpKind.SwitchCaching => $"SwitchCaching(live #{A}, to {Caching})",
        ModelOpKind.Write => $"Write(live #{A}, block #{B}, seed {C})",
        ModelOpKind.Shrink => $"Shrink({A} pages)",
        ModelOpKind.ReleaseStale => $"ReleaseStale(released #{A})",
        ModelOpKind.DmaMap => $"DmaMap(live #{A}, device #{B % ModelDevices.Count}, seed {C})",
        ModelOpKind.DeviceStray => $"DeviceStray(device #{B % ModelDevices.Count}, seed {C})",
        ModelOpKind.CoherentAlloc => $"CoherentAlloc(device #{B % ModelDevices.Count}, order {A % 3})",
        ModelOpKind.CoherentFree or ModelOpKind.CoherentAccess => $"{Kind}(coherent #{A}, seed {C})",
        ModelOpKind.TtCreate => $"TtCreate(pages: {A}, {Caching}, {Zone}, {(TtFlagsOf(B))})",
        ModelOpKind.TtBind or ModelOpKind.TtMove => $"{Kind}(tt #{A}, device #{B % ModelDevices.Bindable}, seed {C})",
        ModelOpKind.TtSwapOut => $"TtSwapOut(tt #{A}, {(B < 0 ? "all" : $"at most {B} pages")}, seed {C})",
        ModelOpKind.TtShrink => $"TtShrink({A} pages)",
        _ when Kind >= ModelOpKind.TtCreate => $"{Kind}(tt #{A}, seed {C})",
        _ when Kind >= ModelOpKind.DmaMap => $"{Kind}(mapping #{A}, seed {C})",
        _ => $"{Kind}(live #{A})",
    };

    /// <summary>The flags a TtCreate step's B stands for: mostly ZeroAlloc, sometimes unknown contents, sometimes purgeable.</summary>
    public static PagePool.Tt.TtFlags TtFlagsOf(int b) =>
        (b % 4 != 0 ? PagePool.Tt.TtFlags.ZeroAlloc : PagePool.Tt.TtFlags.None) | (b % 8 == 5 ? PagePool.Tt.TtFlags.Purgeable : PagePool.Tt.TtFlags.None);

    // Weights of the kinds, out of 100: the pool a little under half, DMA and TTs a little over a quarter each.
    private static readonly (ModelOpKind Kind, int Weight)[] Weights =
    [
        (ModelOpKind.Allocate, 11), (ModelOpKind.Release, 9), (ModelOpKind.ReleaseStale, 1), (ModelOpKind.ReleaseWrongCaching, 1),
        (ModelOpKind.ReleaseForeign, 1), (ModelOpKind.ReleaseTwiceInOneCall, 1), (ModelOpKind.ReleaseInvalidCaching, 1),
        (ModelOpKind.SwitchCaching, 4), (ModelOpKind.Write, 4), (ModelOpKind.Check, 2), (ModelOpKind.Shrink, 1),

        (ModelOpKind.DmaMap, 7), (ModelOpKind.DmaMapAgain, 1), (ModelOpKind.DmaUnmap, 5), (ModelOpKind.DmaUnmapWrongSize, 1),
        (ModelOpKind.DmaUnmapUnmapped, 1), (ModelOpKind.DmaSync, 4), (ModelOpKind.DmaSyncPastEnd, 1),
        (ModelOpKind.DeviceWrite, 4), (ModelOpKind.DeviceRead, 3), (ModelOpKind.DeviceStray, 3), (ModelOpKind.CpuRead, 2),
        (ModelOpKind.CoherentAlloc, 1), (ModelOpKind.CoherentFree, 1), (ModelOpKind.CoherentAccess, 1),

        (ModelOpKind.TtCreate, 3), (ModelOpKind.TtPopulate, 4), (ModelOpKind.TtUnpopulate, 1), (ModelOpKind.TtPurge, 1),
        (ModelOpKind.TtWrite, 3), (ModelOpKind.TtRead, 2), (ModelOpKind.TtSwapOut, 2), (ModelOpKind.TtBind, 3),
        (ModelOpKind.TtUnbind, 2), (ModelOpKind.TtMove, 1), (ModelOpKind.TtToVram, 1), (ModelOpKind.TtToSystem, 1),
        (ModelOpKind.TtDeviceWrite, 2), (ModelOpKind.TtDeviceRead, 1), (ModelOpKind.TtDestroy, 2), (ModelOpKind.TtShrink, 1),
    ];

    /// <summary>A seeded sequence of <paramref name="count"/> steps, weighted toward the legal ones.</summary>
    public static List<ModelOp> Generate(int seed, int count)
    {
        int total = Weights.Sum(w => w.Weight);
        var rng = new Random(seed);
        var ops = new List<ModelOp>(count);
        for (int i = 0; i < count; i++)
        {
            int r = rng.Next(total);
            var kind = Weights[0].Kind;
            foreach (var (k, w) in Weights)
            {
                if (r < w) { kind = k; break; }
                r -= w;
            }
            var caching = (CachingMode)rng.Next(3);
            var zone = rng.Next(4) == 0 ? Zone.Dma32 : Zone.Normal;
            int a = rng.Next(1 << 20), b = rng.Next(1 << 20), c = rng.Next();
            ops.Add((kind switch
            {
                ModelOpKind.Allocate => new ModelOp(kind, 1 + rng.Next(rng.Next(2) == 0 ? 2 : 24), rng.Next(8) == 0 ? 1 : 0, 0, caching, zone),
                ModelOpKind.ReleaseInvalidCaching => new ModelOp(kind, a, 3 + rng.Next(253), 0, caching, zone),
                ModelOpKind.Shrink => new ModelOp(kind, rng.Next(3) == 0 ? int.MaxValue : rng.Next(600), 0, 0, caching, zone),
                ModelOpKind.TtCreate => new ModelOp(kind, 1 + rng.Next(rng.Next(3) == 0 ? 64 : 8), b, 0, caching, zone),
                ModelOpKind.TtSwapOut => new ModelOp(kind, a, rng.Next(2) == 0 ? -1 : rng.Next(40), c, caching, zone),
                ModelOpKind.TtShrink => new ModelOp(kind, rng.Next(3) == 0 ? int.MaxValue : rng.Next(200), 0, 0, caching, zone),
                _ => new ModelOp(kind, a, b, c, caching, zone),
            }) with { Tag = i });
        }
        return ops;
    }
}
