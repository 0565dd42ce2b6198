using System.Runtime.CompilerServices;

namespace PagePool.Memory;

/// <summary>
/// A compact name for one page or one 2^order block of pages. Handles are plain values: copying one is free,
/// and using one after the page went back (a stale handle), twice (a double free) or with another memory space
/// (a foreign handle) is detected through the generation and the space identity, never trusted.
/// </summary>
/// <remarks>
/// <para>A handle is two words. <see cref="Value"/>, high to low: space tag (8 bits, never 0) | arena (12) | page within
/// arena (16) | order (4) | generation (24). The generation is the low 24 bits of the page's own counter, which
/// moves every time the page changes hands back (to its pool or to the system), so an old handle stops matching
/// the moment its page is given back. The second word is the serial of the memory space that made the handle:
/// serials count up for the life of the process and are never reused, so a handle of a disposed space is foreign
/// to every space created after it, however many come and go (the 8-bit tag alone would wrap after 255).</para>
/// <para>A handle rebuilt with <see cref="PageHandle(ulong)"/> from its raw value alone carries no space: every
/// space refuses it as foreign. Rebuild one with <see cref="PhysicalMemory.HandleOf(ulong)"/> of the space it came
/// from.</para>
/// </remarks>
public readonly struct PageHandle : IEquatable<PageHandle>
{
    internal const int GenerationBits = 24, OrderBits = 4, PageBits = 16, ArenaBits = 12, SpaceBits = 8;
    internal const int OrderShift = GenerationBits;
    internal const int PageShift = OrderShift + OrderBits;
    internal const int ArenaShift = PageShift + PageBits;
    internal const int SpaceShift = ArenaShift + ArenaBits;
    internal const ulong GenerationMask = (1UL << GenerationBits) - 1;
    internal const ulong SpaceTagMask = (1UL << SpaceBits) - 1;

    /// <summary>
    /// The 8-bit tag a space's serial puts in <see cref="Value"/>: 1..255, never 0, so that no valid handle has the
    /// value 0 of the null handle (arena 0, page 0, order 0, generation 0 is a real block).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong SpaceTagOf(ulong spaceSerial) => spaceSerial % SpaceTagMask + 1;

    /// <summary>
    /// The raw 64-bit value, for storage in native arrays; rebuild the handle with
    /// <see cref="PhysicalMemory.HandleOf(ulong)"/>. Zero is never a valid handle.
    /// </summary>
    public ulong Value { get; }

    /// <summary>The serial of the memory space that made this handle; 0 when none did.</summary>
    internal ulong SpaceSerial { get; }

    /// <summary>
    /// Wrap a raw value with no memory space attached: every space refuses the result as foreign. Use
    /// <see cref="PhysicalMemory.HandleOf(ulong)"/> to rebuild a handle a space will accept.
    /// </summary>
    public PageHandle(ulong value) => Value = value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PageHandle(ulong value, ulong spaceSerial)
    {
        Value = value;
        SpaceSerial = spaceSerial;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PageHandle(ulong spaceSerial, int arena, int page, int order, ulong generation)
    {
        Value = (SpaceTagOf(spaceSerial) << SpaceShift) | ((ulong)arena << ArenaShift) | ((ulong)page << PageShift)
                | ((ulong)order << OrderShift) | (generation & GenerationMask);
        SpaceSerial = spaceSerial;
    }

    /// <summary>The null handle (value 0).</summary>
    public static PageHandle Null => default;

    /// <summary>True for the null handle.</summary>
    public bool IsNull => Value == 0;

    /// <summary>log2 of the number of pages this handle names (0 = one 4 KiB page, 9 = 2 MiB).</summary>
    public int Order => (int)(Value >> OrderShift) & ((1 << OrderBits) - 1);

    /// <summary>How many 4 KiB pages this handle names.</summary>
    public int PageCount => 1 << Order;

    internal int Arena => (int)(Value >> ArenaShift) & ((1 << ArenaBits) - 1);
    internal int Page => (int)(Value >> PageShift) & ((1 << PageBits) - 1);
    internal uint Generation => (uint)(Value & GenerationMask);

    /// <summary>The same handle with another generation (a release names the block's next life with it).</summary>
    internal PageHandle WithGeneration(ulong generation)
        => new((Value & ~GenerationMask) | (generation & GenerationMask), SpaceSerial);

    /// <summary>The same handle with other raw bits in the same space (tests use it to forge handles).</summary>
    internal PageHandle WithValue(ulong value) => new(value, SpaceSerial);

    /// <inheritdoc/>
    public bool Equals(PageHandle other) => Value == other.Value && SpaceSerial == other.SpaceSerial;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is PageHandle h && Equals(h);
    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Value, SpaceSerial);
    /// <summary>Equality of the raw value and the memory space.</summary>
    public static bool operator ==(PageHandle a, PageHandle b) => a.Equals(b);
    /// <summary>Inequality of the raw value or the memory space.</summary>
    public static bool operator !=(PageHandle a, PageHandle b) => !a.Equals(b);

    /// <summary>space:arena:page/order@generation, for messages (space is the space's serial, "?" when none).</summary>
    public override string ToString()
        => IsNull ? "PageHandle(null)"
           : $"PageHandle({(SpaceSerial == 0 ? "?" : SpaceSerial.ToString(System.Globalization.CultureInfo.InvariantCulture))}:{Arena}:{Page}/o{Order}@{Generation})";
}
