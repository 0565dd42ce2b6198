namespace PagePool.Cli.Bench;

/// <summary>What the gate concluded for one metric.</summary>
internal enum GateVerdict
{
    Same,
    Improvement,
    Regression,
    OnlyInBaseline,
    OnlyInCurrent,
    NoPair,
    TooFewSamples,
}
