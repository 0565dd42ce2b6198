using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of bytes over a <see cref="PoolAllocator"/>, for code that takes its buffers as
/// <see cref="Memory{T}"/>: System.IO.Pipelines (<c>new PipeOptions(pool: ...)</c>), sockets, serializers.
/// Every rented buffer is one block of the page pool: native memory, page aligned, never moved by the GC, so
/// pinning it costs nothing and it can be handed to native code or a device as it is.
/// </summary>
/// <remarks>
/// <para><see cref="Rent"/> rounds the length up to whole 4 KiB pages and then to one block of 2^order pages (the
/// pool's unit): 1 byte to 4 KiB gets one page, 5 KiB gets 8 KiB, 1 MiB + 1 byte gets 2 MiB. The buffer's
/// <see cref="Memory{T}"/> spans the whole block. Above <see cref="MaxBufferSize"/> (2 MiB, the largest block)
/// <see cref="Rent"/> throws; Pipelines reads <see cref="MaxBufferSize"/> and takes larger buffers elsewhere.</para>
/// <para>Each rent returns a new owner object: a buffer must never be reachable through an owner that was disposed,
/// so owners are not recycled (as <see cref="MemoryPool{T}.Shared"/>, which allocates one per rent too). Disposing
/// the owner gives the block back exactly once, from any thread; disposing it again does nothing. After that,
/// <see cref="IMemoryOwner{T}.Memory"/>, <see cref="Memory{T}.Span"/> of a <see cref="Memory{T}"/> taken earlier,
/// and <see cref="Memory{T}.Pin"/> throw <see cref="ObjectDisposedException"/>: a stale buffer never reads
/// another renter's page. (A <see cref="Span{T}"/> obtained before the dispose is a raw view and is not checked:
/// do not keep one past the dispose, as with any pooled buffer.)</para>
/// <para>The pool does not own its <see cref="PoolAllocator"/>: dispose the owners, then this pool, then the
/// allocator. An owner that is never disposed keeps its block until the memory space is disposed.</para>
/// </remarks>
public sealed class PageMemoryPool : MemoryPool<byte>
{
    /// <summary>The largest buffer <see cref="Rent"/> hands out: one block of the highest order (2 MiB).</summary>
    public const int MaxBlockBytes = PhysicalMemory.PageSize << PhysicalMemory.MaxOrder;

    private readonly PoolAllocator _allocator;
    private readonly CachingMode _caching;
    private readonly Zone _zone;
    private readonly AllocationFlags _flags;
    private int _disposed;

    /// <summary>A pool renting blocks from <paramref name="allocator"/> as <paramref name="options"/> say.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public PageMemoryPool(PoolAllocator allocator, PageMemoryPoolOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        options ??= new PageMemoryPoolOptions();
        options.Validate();
        _allocator = allocator;
        _caching = options.Caching;
        _zone = options.Zone;
        _flags = options.ClearBuffers ? AllocationFlags.None : AllocationFlags.NoClear;
        Options = options;
    }

    /// <summary>The options in force.</summary>
    public PageMemoryPoolOptions Options { get; }

    /// <summary>The allocator blocks come from.</summary>
    public PoolAllocator Allocator => _allocator;

    /// <summary>2 MiB: the largest block of the page pool. <see cref="Rent"/> throws above it.</summary>
    public override int MaxBufferSize => MaxBlockBytes;

    /// <summary>
    /// Rent a buffer of at least <paramref name="minimumLength"/> bytes: one page pool block of 2^order pages,
    /// the smallest that holds it (-1, the default, and 0 give one 4 KiB page).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="minimumLength"/> is below -1 or above
    /// <see cref="MaxBufferSize"/>.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    /// <exception cref="ZoneExhaustedException">The zone has no page left.</exception>
    /// <exception cref="InsufficientMemoryException">The zone has pages but no free contiguous block of the order asked for.</exception>
    public override IMemoryOwner<byte> Rent(int minimumLength = -1)
    {
        if ((uint)(minimumLength + 1) > PhysicalMemory.PageSize + 1 || _disposed != 0)
            return RentSlow(minimumLength);
        // One page: the allocator's single-page fast path.
        var block = _allocator.AllocatePage(_caching, _zone, _flags);
        return Own(block);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe PageBuffer Own(PageHandle block)
    {
        try
        {
            // The allocator just handed this block to us, so its view needs no check (GetSpan's checks cost
            // about a fifth of a rent + dispose, measured).
            return new PageBuffer(_allocator, _caching, block, _allocator.Memory.ViewOf(block), block.PageCount << PhysicalMemory.PageShift);
        }
        catch
        {
            _allocator.ReleasePage(block, _caching); // the owner could not be made: the block must not leak
            throw;
        }
    }

    // Everything but a one-page rent: validation, a disposed pool, and blocks above order 0.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageBuffer RentSlow(int minimumLength)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (minimumLength < -1 || minimumLength > MaxBlockBytes)
            throw new ArgumentOutOfRangeException(nameof(minimumLength), minimumLength,
                $"Rent takes -1 (one page) or 0..{MaxBlockBytes} bytes, the largest block of the page pool (MaxBufferSize); rent larger buffers as several blocks or from another pool.");
        if (minimumLength <= PhysicalMemory.PageSize)
            return Own(_allocator.AllocatePage(_caching, _zone, _flags));

        int pages = (minimumLength + PhysicalMemory.PageSize - 1) >> PhysicalMemory.PageShift;
        int order = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)pages));
        // Allocate walks down the orders when no block of this order is free; a buffer must be one block, so
        // give back a split result and say so.
        Span<PageHandle> blocks = stackalloc PageHandle[1 << order];
        int n = _allocator.Allocate(1 << order, _caching, _zone, blocks, _flags);
        if (n != 1)
        {
            _allocator.Release(blocks[..n], _caching);
            throw new InsufficientMemoryException(
                $"Rent({minimumLength}): the {_zone} zone has no free contiguous block of {(PhysicalMemory.PageSize << order) >> 10} KiB; rent smaller buffers or give memory back.");
        }
        return Own(blocks[0]);
    }

    /// <summary>
    /// Stop renting: <see cref="Rent"/> throws <see cref="ObjectDisposedException"/> from now on. Buffers rented
    /// before stay valid until their owners are disposed, which gives their blocks back to the allocator.
    /// </summary>
    protected override void Dispose(bool disposing) => Volatile.Write(ref _disposed, 1);
}
