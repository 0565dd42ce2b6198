namespace PagePool.Dma;

/// <summary>Which API made a mapping (dma-debug's map_err_type / entry type): it must be undone by its partner.</summary>
public enum DmaMapKind
{
    /// <summary>dma_map_page / dma_unmap_page.</summary>
    Page,
    /// <summary>dma_map_single / dma_unmap_single.</summary>
    Single,
    /// <summary>dma_map_sg / dma_unmap_sg.</summary>
    Scatterlist,
    /// <summary>dma_alloc_coherent / dma_free_coherent.</summary>
    Coherent,
}
