using System.Buffers;
using System.Runtime.CompilerServices;
using PagePool.Memory;
using PagePool.Pool;

namespace PagePool.Buffers;

/// <summary>
/// One rented block as <see cref="Memory{T}"/>: a <see cref="MemoryManager{T}"/> over the block's native view, and
/// the <see cref="IMemoryOwner{T}"/> <see cref="PageMemoryPool.Rent"/> returns. The memory never moves, so
/// <see cref="Pin"/> only hands out the pointer.
/// </summary>
/// <remarks>
/// The block's handle is the owner's state: non-zero while rented, swapped to zero by the one dispose that gives
/// it back. Every accessor checks it, so any use after dispose is an <see cref="ObjectDisposedException"/> and never
/// reaches the page, which by then may belong to another renter. So is a use after the memory space under the pool
/// was disposed: its views are retired then, and a span over them would silently read zeros.
/// </remarks>
internal sealed unsafe class PageBuffer : MemoryManager<byte>, IMemoryOwner<byte>
{
    private readonly PoolAllocator _allocator;
    private readonly CachingMode _caching;
    private readonly byte* _pointer;
    private readonly int _length;
    private ulong _block; // the rented block's raw handle; 0 once given back

    internal PageBuffer(PoolAllocator allocator, CachingMode caching, PageHandle block, byte* pointer, int length)
    {
        _allocator = allocator;
        _caching = caching;
        _block = block.Value;
        _pointer = pointer;
        _length = length;
    }

    /// <summary>The block this buffer holds; the null handle once disposed.</summary>
    internal PageHandle Block => Volatile.Read(ref _block) is var raw && raw != 0 ? _allocator.Memory.HandleOf(raw) : PageHandle.Null;

    /// <inheritdoc/>
    public override Memory<byte> Memory
    {
        get
        {
            if (Volatile.Read(ref _block) == 0 || _allocator.Memory.IsDisposed) ThrowDisposed();
            return CreateMemory(_length);
        }
    }

    /// <inheritdoc/>
    public override Span<byte> GetSpan()
    {
        if (Volatile.Read(ref _block) == 0 || _allocator.Memory.IsDisposed) ThrowDisposed();
        return new Span<byte>(_pointer, _length);
    }

    /// <summary>The address of byte <paramref name="elementIndex"/>: the block is native memory and never moves.</summary>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if (Volatile.Read(ref _block) == 0 || _allocator.Memory.IsDisposed) ThrowDisposed();
        if ((uint)elementIndex > (uint)_length)
            throw new ArgumentOutOfRangeException(nameof(elementIndex), elementIndex, $"Pin takes an index within the buffer's {_length} bytes.");
        return new MemoryHandle(_pointer + elementIndex);
    }

    /// <summary>Nothing to undo: <see cref="Pin"/> pins nothing.</summary>
    public override void Unpin() { }

    // Re-implemented so a dispose costs one exchange and the release, without MemoryManager's GC.SuppressFinalize
    // (this type has no finalizer).
    void IDisposable.Dispose() => Dispose(true);

    /// <summary>
    /// Give the block back to its pool, exactly once even when threads race; later calls do nothing, and so does a
    /// dispose after the memory space was disposed.
    /// </summary>
    protected override void Dispose(bool disposing)
    {
        ulong raw = Interlocked.Exchange(ref _block, 0);
        // After the memory space was disposed its pages are already the system's: nothing to give back.
        if (raw != 0 && !_allocator.Memory.IsDisposed) _allocator.ReleasePage(_allocator.Memory.HandleOf(raw), _caching);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposed() => throw new ObjectDisposedException(nameof(PageBuffer), Volatile.Read(ref _block) == 0
        ? "The buffer was disposed and its pages given back to the pool; rent a new one."
        : "The memory space under the buffer's pool was disposed; its pages are gone.");
}
