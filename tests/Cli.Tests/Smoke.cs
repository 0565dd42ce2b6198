namespace PagePool.Cli.Tests; public class Smoke { [Xunit.Fact] public void Runs() => Xunit.Assert.True(1 + 1 == 2); }
