using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Running;

// BenchmarkDotNet deep dives into the paths 'pagepool bench' measures; results as JSON (and markdown) in
// BenchmarkDotNet.Artifacts/results/. The quick form (about two minutes, README.md 'perf'):
//   dotnet run -c Release --project perf -- --filter '*' --job short
var config = DefaultConfig.Instance.AddExporter(JsonExporter.Full);
BenchmarkSwitcher.FromAssembly(typeof(PagePool.Perf.PoolBenchmarks).Assembly).Run(args, config);
