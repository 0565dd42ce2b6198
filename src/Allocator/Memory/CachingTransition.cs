using System.Diagnostics;
using PagePool.Native;

namespace PagePool.Memory;

/// <summary>
/// Caching changes with the kernel's cost shape (set_pages_array_wc / set_pages_array_wb on x86).
/// Leaving write-back flushes every cache line of the page (clflushopt) and changes the page tables of the
/// cached linear alias (mprotect to PROT_NONE, a real PTE change and TLB flush); going back to write-back
/// restores the alias. A batch coalesces contiguous blocks with the same current mode into one mprotect per
/// run and fences once at the end: that is what makes keeping converted pages in a pool worth it.
/// </summary>
internal static unsafe class CachingTransition
{
    /// <summary>
    /// Change held blocks to <paramref name="target"/>; blocks already there are skipped.
    /// Returns the number of page-table runs changed (mprotect calls made).
    /// All or nothing: when a page-table change fails part way, the runs already changed are changed back and the
    /// error is rethrown, so every block is in the mode it was in before the call. Should a change back fail too,
    /// the metadata still tells the truth: a block's caching field is written only after its alias was changed.
    /// </summary>
    internal static int Apply(PhysicalMemory memory, ReadOnlySpan<PageHandle> blocks, CachingMode target)
    {
        Debug.Assert((uint)target <= (uint)CachingMode.Uncached, "callers validate the mode: a wider value would spill into the order bits");
#if DEBUG
        foreach (var h in blocks)
        {
            // "Held blocks": a pool's fresh blocks (Allocated, not yet handed out) or blocks this thread took Busy.
            var state = PageMeta.State(*memory.MetaOf(h));
            Debug.Assert(state is PageState.Allocated or PageState.Busy, $"{h} is {state}: only held blocks change caching");
        }
#endif
        long t0 = Diagnostics.PagePoolEventSource.CachingOn ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
        int runs = 0, pages = 0;
        bool flushed = false;
        int i = 0;
        // The mode each block starts in, so a failure part way can put the changed ones back.
        Span<CachingMode> previous = blocks.Length <= 1024 ? stackalloc CachingMode[blocks.Length] : new CachingMode[blocks.Length];
        for (int k = 0; k < blocks.Length; k++) previous[k] = PageMeta.Caching(*memory.MetaOf(blocks[k]));
        try
        {
        while (i < blocks.Length)
        {
            PageHandle first = blocks[i];
            Arena arena = memory.ArenaOf(first);
            ulong* meta = arena.MetaOf(first.Page);
            CachingMode from = PageMeta.Caching(*meta);
            if (from == target) { i++; continue; }

            // Extend the run over blocks that follow contiguously in the same arena from the same mode.
            int startPage = first.Page, endPage = startPage + first.PageCount, j = i + 1;
            for (; j < blocks.Length; j++)
            {
                PageHandle next = blocks[j];
                if (next.Arena != first.Arena || next.Page != endPage || PageMeta.Caching(*arena.MetaOf(next.Page)) != from) break;
                endPage += next.PageCount;
            }

            byte* view = arena.View + ((nuint)startPage << PhysicalMemory.PageShift);
            byte* alias = arena.Alias + ((nuint)startPage << PhysicalMemory.PageShift);
            nuint bytes = (nuint)(endPage - startPage) << PhysicalMemory.PageShift;
            if (from == CachingMode.WriteBack)
            {
                // Flush through the view: the alias is about to lose its mapping, and both map the same lines.
                Shim.FlushNoFence(view, bytes);
                flushed = true;
                Libc.Mprotect(alias, bytes, Libc.PROT_NONE);
                runs++;
            }
            else if (target == CachingMode.WriteBack)
            {
                Libc.Mprotect(alias, bytes, Libc.PROT_READ | Libc.PROT_WRITE);
                runs++;
            }
            // WC <-> UC changes only the PAT type; the alias stays unmapped and the lines are already clean.

            pages += endPage - startPage;
            for (int k = i; k < j; k++)
            {
                PageMeta.SetCaching(arena.MetaOf(blocks[k].Page), target);
            }
            i = j;
        }
        }
        catch
        {
            if (flushed) Shim.Fence();
            Revert(memory, blocks[..i], previous, target);
            throw;
        }
        if (flushed) Shim.Fence();
        if (t0 != 0 && pages != 0)
            Diagnostics.PagePoolEventSource.Log.CachingTransition((int)target, pages, runs, (long)System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
        return runs;
    }

    // Undo the runs a failed Apply changed: every block of blocks[..done] that is now in target goes back to the
    // mode its run came from. Only the page-table change is undone; the flush already done is harmless.
    private static void Revert(PhysicalMemory memory, ReadOnlySpan<PageHandle> done, ReadOnlySpan<CachingMode> previous, CachingMode target)
    {
        for (int k = 0; k < done.Length; k++)
        {
            var h = done[k];
            var from = previous[k];
            Arena arena = memory.ArenaOf(h);
            ulong* meta = arena.MetaOf(h.Page);
            if (from == target || PageMeta.Caching(*meta) != target) continue;
            byte* alias = arena.Alias + ((nuint)h.Page << PhysicalMemory.PageShift);
            nuint bytes = (nuint)h.PageCount << PhysicalMemory.PageShift;
            try
            {
                if (from == CachingMode.WriteBack) Libc.Mprotect(alias, bytes, Libc.PROT_READ | Libc.PROT_WRITE);
                else if (target == CachingMode.WriteBack) Libc.Mprotect(alias, bytes, Libc.PROT_NONE);
            }
            catch (Native.NativeCallException)
            {
                continue; // this block stays in target, and its metadata says so
            }
            PageMeta.SetCaching(meta, from);
        }
    }
}
