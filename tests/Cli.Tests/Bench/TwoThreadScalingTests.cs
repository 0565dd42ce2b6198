using PagePool.Cli.Bench;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class TwoThreadScalingTests
{
    [Fact]
    public void Repetitions_taken_while_the_machine_itself_did_not_scale_are_left_out_and_named()
    {
        (double, double)[] reps = [(1.85, 1.95), (1.20, 1.12), (1.80, 1.90), (1.35, 1.50), (1.90, 1.98)];

        var counted = TwoThreadScaling.Counted("iommu.scaling.2t", reps, out string? note);

        Assert.Equal([1.80, 1.85, 1.90], counted.Values);
        Assert.Equal("iommu.scaling.2t: 3 of 5 repetitions counted (ceiling at least 90% of its best, 1.98, and never fewer than 3); the machine's own scaling measured beside the others: 1.50, 1.12.", note);
    }

    [Fact]
    public void At_least_three_repetitions_count_those_of_the_highest_ceilings_so_the_gate_can_test_them()
    {
        (double, double)[] reps = [(1.20, 1.10), (1.30, 1.40), (1.85, 1.95), (1.25, 1.50), (1.40, 1.60)];

        var counted = TwoThreadScaling.Counted("pool.scaling.2t", reps, out string? note);

        Assert.Equal([1.25, 1.40, 1.85], counted.Values); // ceilings 1.95, 1.60, 1.50; only 1.95 is within 90% of the best
        Assert.Contains("3 of 5 repetitions counted", note);
        Assert.EndsWith("beside the others: 1.40, 1.10.", note);
    }

    [Fact]
    public void A_machine_that_never_scales_keeps_every_repetition_and_its_low_ratio()
    {
        (double, double)[] reps = [(1.10, 1.15), (1.05, 1.10), (1.12, 1.18)];

        var counted = TwoThreadScaling.Counted("pool.scaling.2t", reps, out string? note);

        Assert.Equal(3, counted.Values.Count);
        Assert.Equal(1.10, counted.Median);
        Assert.Null(note);
    }

    [Fact]
    public void A_lone_thread_block_from_a_calmer_moment_does_not_set_the_ratio()
    {
        // Every pair scales 1.8; one lone-thread block ran while the other CPU's neighbours were idle (30 M/s).
        double[] one = [15, 16, 30, 15, 16], two = [27, 28.8, 33, 27, 28.8];

        double ratio = TwoThreadScaling.PairedRatio(one, two);

        Assert.Equal(1.8, ratio, 9); // the fastest over the fastest would be 33 / 30 = 1.1
    }

    [Fact]
    public void An_even_number_of_pairs_takes_the_mean_of_the_middle_two_ratios_in_order()
    {
        Assert.Equal(1.5, TwoThreadScaling.PairedRatio([10, 10, 10, 10], [19, 14, 12, 16]), 9); // ratios 1.2 1.4 1.6 1.9
    }

    [Theory]
    [InlineData(0.0, 18.0)]
    [InlineData(10.0, double.PositiveInfinity)]
    [InlineData(double.NaN, 18.0)]
    public void A_block_without_a_finite_positive_throughput_is_refused_not_sorted_into_the_median(double one, double two)
    {
        var e = Assert.Throws<ArgumentException>(() => TwoThreadScaling.PairedRatio([10, one, 10], [18, two, 18]));
        Assert.StartsWith("Pair 1: throughputs", e.Message);
    }

    [Fact]
    public void Pairs_need_as_many_one_thread_blocks_as_two_thread_blocks()
    {
        var e = Assert.Throws<ArgumentException>(() => TwoThreadScaling.PairedRatio([10, 10], [18]));
        Assert.Contains("2 one-thread and 1 two-thread blocks", e.Message);
    }
}
