using System.Runtime.CompilerServices;

namespace PagePool.Memory;

/// <summary>
/// A compact name for one page or one 2^order block of pages. Handles are plain values: copying one is free,
/// and using one after the page went back (a stale handle), twice (a double free) or with another memory space
/// (a foreign handle) is detected through the generation and space fields, never trusted.
/// </summary>
/// <remarks>
/// Layout, high to low: space id (8 bits) | arena (12) | page within arena (16) | order (4) | generation (24).
/// The generation is the low 24 bits of the page's own counter, which moves every time the page changes hands
/// back (to its pool or to the system), so an old handle stops matching the moment its page is given back.
/// </remarks>
public readonly struct PageHandle : IEquatable<PageHandle>
{
    internal const int GenerationBits = 24, OrderBits = 4, PageBits = 16, ArenaBits = 12, SpaceBits = 8;
    internal const int OrderShift = GenerationBits;
    internal const int PageShift = OrderShift + OrderBits;
    internal const int ArenaShift = PageShift + PageBits;
    internal const int SpaceShift = ArenaShift + ArenaBits;
    internal const ulong GenerationMask = (1UL << GenerationBits) - 1;

    /// <summary>The raw 64-bit value, for storage in native arrays. Zero is never a valid handle.</summary>
    public ulong Value { get; }

    /// <summary>Wrap a raw value produced by <see cref="Value"/>; it is validated when used.</summary>
    public PageHandle(ulong value) => Value = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PageHandle(int space, int arena, int page, int order, ulong generation)
        => Value = ((ulong)space << SpaceShift) | ((ulong)arena << ArenaShift) | ((ulong)page << PageShift)
                   | ((ulong)order << OrderShift) | (generation & GenerationMask);

    /// <summary>The null handle (value 0).</summary>
    public static PageHandle Null => default;

    /// <summary>True for the null handle.</summary>
    public bool IsNull => Value == 0;

    /// <summary>log2 of the number of pages this handle names (0 = one 4 KiB page, 9 = 2 MiB).</summary>
    public int Order => (int)(Value >> OrderShift) & ((1 << OrderBits) - 1);

    /// <summary>How many 4 KiB pages this handle names.</summary>
    public int PageCount => 1 << Order;

    internal int Space => (int)(Value >> SpaceShift);
    internal int Arena => (int)(Value >> ArenaShift) & ((1 << ArenaBits) - 1);
    internal int Page => (int)(Value >> PageShift) & ((1 << PageBits) - 1);
    internal uint Generation => (uint)(Value & GenerationMask);

    /// <summary>The same handle with another generation (tests use it to forge stale handles).</summary>
    internal PageHandle WithGeneration(ulong generation) => new((Value & ~GenerationMask) | (generation & GenerationMask));

    /// <inheritdoc/>
    public bool Equals(PageHandle other) => Value == other.Value;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is PageHandle h && Equals(h);
    /// <inheritdoc/>
    public override int GetHashCode() => Value.GetHashCode();
    /// <summary>Equality of raw values.</summary>
    public static bool operator ==(PageHandle a, PageHandle b) => a.Value == b.Value;
    /// <summary>Inequality of raw values.</summary>
    public static bool operator !=(PageHandle a, PageHandle b) => a.Value != b.Value;

    /// <summary>space:arena:page/order@generation, for messages.</summary>
    public override string ToString() => IsNull ? "PageHandle(null)" : $"PageHandle({Space}:{Arena}:{Page}/o{Order}@{Generation})";
}
