using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using PagePool.Diagnostics;
using PagePool.Dma;
using PagePool.Memory;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

// Listeners are process-wide: run alone so other tests' events do not count here.
[Collection(nameof(RssTests))]
public sealed class DmaEventTests
{
    private sealed class Listener(EventKeywords keywords) : EventListener
    {
        internal readonly ConcurrentBag<string> Names = new();

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == PagePoolEventSource.ProviderName) EnableEvents(source, EventLevel.Informational, keywords);
        }

        protected override void OnEventWritten(EventWrittenEventArgs e) => Names.Add(e.EventName ?? "");
    }

    [Fact]
    public void Faults_exhaustion_and_checker_reports_are_events_under_the_dma_keyword()
    {
        using var m = new DmaTestMachine();
        using var listener = new Listener(PagePoolEventSource.Keywords.Dma);
        var dev = m.Device("tiny", DmaOpsKind.Iommu, maskBits: 13); // one usable IOVA page
        var block = m.Memory.AllocateBlock(Zone.Normal, 1);
        Assert.Throws<DmaFaultException>(() => dev.Engine.Read(0x1000, new byte[1]));
        Assert.Throws<IovaSpaceExhaustedException>(() => dev.MapPage(block, 0, 8192, DmaDirection.ToDevice));
        Assert.Throws<DmaMappingException>(() => dev.UnmapPage(0x1000, 64, DmaDirection.ToDevice));
        Assert.Contains("DmaFault", listener.Names);
        Assert.Contains("IovaExhausted", listener.Names);
        Assert.Contains("DmaCheckReported", listener.Names);
    }

    [Fact]
    public void Dma_events_are_silent_unless_their_keyword_is_enabled()
    {
        using var m = new DmaTestMachine();
        using var listener = new Listener(PagePoolEventSource.Keywords.Pool);
        var dev = m.Device("dev", DmaOpsKind.Direct);
        Assert.Throws<DmaFaultException>(() => dev.Engine.Read(0x1000, new byte[1]));
        Assert.DoesNotContain("DmaFault", listener.Names);
    }
}
