namespace PagePool.Cli.Stress;

/// <summary>
/// The operations a stress run times and counts: the one table of them. Histograms are sized from it and the
/// summary's and JSON's names come from it (<see cref="StressOps"/>), so adding an operation is adding a member.
/// </summary>
internal enum StressOp { Allocate, AllocatePage, Release, Switch, Scan }
