using PagePool.Memory;

namespace PagePool.Allocator.Tests.Model;

/// <summary>What a step does. Buffers are named by index modulo the live (or released) count at run time, so a
/// sequence stays meaningful when the shrinker deletes steps from it.</summary>
public enum ModelOpKind
{
    Allocate, Release, ReleaseStale, ReleaseWrongCaching, ReleaseForeign, ReleaseTwiceInOneCall, ReleaseInvalidCaching,
    SwitchCaching, Write, Check, Shrink,
}

/// <summary>One generated step: a kind and the numbers it draws on (their meaning depends on the kind).</summary>
public readonly record struct ModelOp(ModelOpKind Kind, int A, int B, int C, CachingMode Caching, Zone Zone)
{
    public override string ToString() => Kind switch
    {
        ModelOpKind.Allocate => $"Allocate(pages: {A}, {Caching}, {Zone}{(B != 0 ? ", NoClear" : "")})",
        ModelOpKind.SwitchCaching => $"SwitchCaching(live #{A}, to {Caching})",
        ModelOpKind.Write => $"Write(live #{A}, block #{B}, seed {C})",
        ModelOpKind.Shrink => $"Shrink({A} pages)",
        ModelOpKind.ReleaseStale => $"ReleaseStale(released #{A})",
        _ => $"{Kind}(live #{A})",
    };

    /// <summary>A seeded sequence of <paramref name="count"/> steps, weighted toward the legal ones.</summary>
    public static List<ModelOp> Generate(int seed, int count)
    {
        var rng = new Random(seed);
        var ops = new List<ModelOp>(count);
        for (int i = 0; i < count; i++)
        {
            int r = rng.Next(100);
            var caching = (CachingMode)rng.Next(3);
            var zone = rng.Next(4) == 0 ? Zone.Dma32 : Zone.Normal;
            int a = rng.Next(1 << 20), b = rng.Next(1 << 20), c = rng.Next();
            ops.Add(r switch
            {
                < 30 => new ModelOp(ModelOpKind.Allocate, 1 + rng.Next(rng.Next(2) == 0 ? 2 : 24), rng.Next(8) == 0 ? 1 : 0, 0, caching, zone),
                < 50 => new ModelOp(ModelOpKind.Release, a, 0, 0, caching, zone),
                < 54 => new ModelOp(ModelOpKind.ReleaseStale, a, 0, 0, caching, zone),
                < 57 => new ModelOp(ModelOpKind.ReleaseWrongCaching, a, b, 0, caching, zone),
                < 59 => new ModelOp(ModelOpKind.ReleaseForeign, a, 0, 0, caching, zone),
                < 61 => new ModelOp(ModelOpKind.ReleaseTwiceInOneCall, a, 0, 0, caching, zone),
                < 63 => new ModelOp(ModelOpKind.ReleaseInvalidCaching, a, 3 + rng.Next(253), 0, caching, zone),
                < 73 => new ModelOp(ModelOpKind.SwitchCaching, a, 0, 0, caching, zone),
                < 88 => new ModelOp(ModelOpKind.Write, a, b, c, caching, zone),
                < 97 => new ModelOp(ModelOpKind.Check, a, 0, 0, caching, zone),
                _ => new ModelOp(ModelOpKind.Shrink, rng.Next(3) == 0 ? int.MaxValue : rng.Next(600), 0, 0, caching, zone),
            });
        }
        return ops;
    }
}
