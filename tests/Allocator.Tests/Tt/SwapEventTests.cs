// Populate takes a token as its interruption point; plain calls here are short and synchronous.
#pragma warning disable xUnit1051

using System.Diagnostics.Tracing;
using PagePool.Diagnostics;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed class SwapEventTests
{
    private sealed class Listener : EventListener
    {
        internal readonly List<(string Name, long Pages)> Events = new();
        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == PagePoolEventSource.ProviderName) EnableEvents(source, EventLevel.Informational, PagePoolEventSource.Keywords.Swap);
        }
        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventId >= 300 && e.EventId < 400 && e.Payload is { Count: > 0 } p && p[0] is long pages)
                lock (Events) Events.Add((e.EventName!, pages));
        }
    }

    [Fact]
    public void Swap_out_swap_in_and_evictions_are_traced_under_the_swap_keyword()
    {
        using var listener = new Listener();
        using var f = new TtFixture(limitBytes: 1L << 20);
        using var a = f.New(256);
        a.Populate();
        a.SwapOut();
        a.Populate();
        using var b = f.New(256);
        b.Populate(); // evicts a
        lock (listener.Events)
        {
            Assert.Contains(("SwapOut", 256L), listener.Events);
            Assert.Contains(("SwapIn", 256L), listener.Events);
            Assert.Contains(("BufferEvicted", 256L), listener.Events);
        }
    }
}
