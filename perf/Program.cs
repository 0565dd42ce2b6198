using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// BenchmarkDotNet deep dives into the same paths 'pagepool bench' measures. In-process: BenchmarkDotNet 0.14
// predates net10.0, and the pool's native shim sits next to this assembly.
//   dotnet run -c Release --project perf -- --filter '*'
var config = DefaultConfig.Instance.AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance));
BenchmarkSwitcher.FromAssembly(typeof(PagePool.Perf.PoolBenchmarks).Assembly).Run(args, config);
