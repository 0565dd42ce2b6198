namespace PagePool.Tt;

/// <summary>Where the pages of a <see cref="PageArray"/> are (TTM's ttm_tt states).</summary>
public enum TtState
{
    /// <summary>No pages: a new buffer, or one whose pages were given back or purged.</summary>
    Unpopulated,
    /// <summary>Every page is resident in system memory: the "anonymous" state, pages any device may take.</summary>
    Populated,
    /// <summary>Populated and bound to a device, which holds a DMA address for every page: the device state.</summary>
    Bound,
    /// <summary>Some or all pages live in the swap store (a partial backup keeps the rest resident); populate brings them back.</summary>
    SwappedOut,
    /// <summary>The contents live in a device-local region (VRAM); no system page is held. Move to system memory to use the pages.</summary>
    DeviceLocal,
}
