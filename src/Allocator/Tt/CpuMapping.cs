using PagePool.Memory;
using PagePool.Native;

namespace PagePool.Tt;

/// <summary>
/// The one address range a buffer keeps for its life (seeds/004: user mappings that survive moves). Resident pages are
/// mapped into it as second views of the pool's memfd pages; pages that are absent (swapped out, never populated) are
/// an anonymous range registered with userfaultfd, so touching them faults them back in; in device-local memory the
/// whole range maps the VRAM region.
/// </summary>
internal sealed unsafe class CpuMapping : IDisposable
{
    internal readonly byte* Base;
    internal readonly nuint Length;

    private readonly bool _faultIn;

    internal CpuMapping(long bytes, bool faultIn)
    {
        _faultIn = faultIn && SwapFaultHandler.Available;
        Length = (nuint)bytes;
        Base = Libc.Mmap(null, Length, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
    }

    /// <summary>Map a resident segment's blocks at their place in the range.</summary>
    internal void MapResident(PhysicalMemory memory, TtSegment seg) => MapResident(memory, seg.FirstPage, seg.Blocks!);

    /// <summary>Map <paramref name="blocks"/> one after another from page <paramref name="firstPage"/> of the range.</summary>
    internal void MapResident(PhysicalMemory memory, int firstPage, ReadOnlySpan<PageHandle> blocks)
    {
        byte* at = Base + ((nuint)firstPage << PhysicalMemory.PageShift);
        foreach (var h in blocks)
        {
            nuint len = (nuint)h.PageCount << PhysicalMemory.PageShift;
            FileIo.DuplicateMapping(memory.ViewOf(h), at, len);
            at += len;
        }
    }

    /// <summary>Make a page range absent: anonymous and watched by the fault handler, or inaccessible (PROT_NONE) without.</summary>
    internal void MapAbsent(long firstPage, long pages)
    {
        byte* at = Base + ((nuint)firstPage << PhysicalMemory.PageShift);
        nuint len = (nuint)pages << PhysicalMemory.PageShift;
        bool watched = _faultIn;
        Libc.Mmap(at, len, watched ? Libc.PROT_READ | Libc.PROT_WRITE : Libc.PROT_NONE,
                  Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE | Libc.MAP_FIXED, -1, 0);
        if (watched) SwapFaultHandler.Watch(at, len);
    }

    /// <summary>Map the whole range onto VRAM pages from <paramref name="page"/>.</summary>
    internal void MapVram(VramRegion vram, long page)
        => Libc.Mmap(Base, Length, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_FIXED, vram.Fd, page << PhysicalMemory.PageShift);

    internal bool Contains(ulong address) => address >= (ulong)Base && address < (ulong)Base + Length;

    public void Dispose() => Libc.Munmap(Base, Length);
}
