using System.Diagnostics.Tracing;
using System.Reflection;
using Microsoft.Diagnostics.NETCore.Client;
using PagePool.Diagnostics;
using PagePool.Memory;
using Xunit;

namespace PagePool.Cli.Tests;

/// <summary>
/// An EventPipe session that names the provider with keywords 0 (what 'dotnet-trace --providers PagePool' sends)
/// records none of PagePool's events, which all carry keywords: the hit-path flag must stay off too, or every pool
/// hit would pay for an event nobody records.
/// </summary>
public sealed class BareProviderSessionTests
{
    private static bool Flag(string name)
        => (bool)typeof(PagePoolEventSource).Assembly.GetType("PagePool.Diagnostics.TraceFlags")!
            .GetField(name, BindingFlags.Static | BindingFlags.NonPublic)!.GetValue(null)!;

    private static bool AnyFlag() => new[] { "Pool", "PoolVerbose", "Caching", "Shrinker", "Memory", "HitPath" }.Any(Flag);

    [Fact]
    public async Task A_session_with_keywords_0_records_nothing_and_leaves_the_hit_path_flag_off_and_explicit_keywords_switch_it_on()
    {
        using var memory = new PhysicalMemory(new MemoryOptions { ArenaBytes = 8L << 20, Dma32Bytes = 0, NormalBytes = 16L << 20 });
        var client = new DiagnosticsClient(Environment.ProcessId);
        Assert.False(AnyFlag());
        using (var bare = client.StartEventPipeSession(new EventPipeProvider(PagePoolEventSource.ProviderName, EventLevel.Verbose, 0), requestRundown: false))
        {
            var recorded = new MemoryStream();
            var drain = bare.EventStream.CopyToAsync(recorded, TestContext.Current.CancellationToken);
            Thread.Sleep(200);
            bool hitPathOn = Flag("HitPath");
            using (var pool = new PagePool.Pool.PoolAllocator(memory))
            {
                var h = pool.AllocatePage(CachingMode.WriteCombined, Zone.Normal); // a miss: PoolMiss, CachingTransition
                pool.Release([h], CachingMode.WriteCombined);
                pool.Scan(long.MaxValue);                                        // ShrinkerScan, MemoryReturned
            }
            bare.Stop();
            await drain.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);
            var events = new List<PagePool.Cli.Trace.NettraceEvent>();
            PagePool.Cli.Trace.NettraceReader.Read(new MemoryStream(recorded.ToArray()), events.Add);
            Assert.DoesNotContain(events, e => e.Metadata.Provider == PagePoolEventSource.ProviderName); // the session records nothing
            // The slow-path flags may read on (IsEnabled cannot tell keywords 0 from "all"), but the hit path's must not.
            Assert.False(hitPathOn, "a keywords-0 session switched the hit-path flag on: every pool hit pays for an event nobody records");
        }
        using (var real = client.StartEventPipeSession(new EventPipeProvider(PagePoolEventSource.ProviderName, EventLevel.Verbose,
                   (long)(PagePoolEventSource.Keywords.Pool | PagePoolEventSource.Keywords.HitPath)), requestRundown: false))
        {
            var drain = real.EventStream.CopyToAsync(Stream.Null, TestContext.Current.CancellationToken);
            Thread.Sleep(200);
            Assert.True(Flag("Pool") && Flag("HitPath"));
            Assert.False(Flag("Caching"));
            real.Stop();
            await drain.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);
        }
        Thread.Sleep(200);
        Assert.False(AnyFlag());
    }
}
