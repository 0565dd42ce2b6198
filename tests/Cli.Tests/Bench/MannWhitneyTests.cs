using PagePool.Cli.Bench;
using Xunit;

namespace PagePool.Cli.Tests;

public sealed class MannWhitneyTests
{
    [Fact]
    public void Fully_separated_samples_of_five_have_the_exact_p_of_one_ordering_in_252()
    {
        double p = MannWhitney.PGreater([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]);
        Assert.Equal(1.0 / 252, p, 12);
    }

    [Fact]
    public void The_wrong_direction_gives_a_p_of_one()
    {
        Assert.Equal(1.0, MannWhitney.PGreater([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]), 12);
    }

    [Fact]
    public void Exact_tail_matches_a_hand_count_for_three_against_three()
    {
        // U = 8 of a maximum 9: orderings with U >= 8 are 2 of C(6,3) = 20.
        Assert.Equal(2.0 / 20, MannWhitney.PGreater([4, 6, 7], [1, 2, 5]), 12);
    }

    [Fact]
    public void The_normal_approximation_agrees_with_the_exact_tail_for_larger_samples()
    {
        var random = new Random(42);
        var x = Enumerable.Range(0, 30).Select(_ => random.NextDouble() + 0.3).ToArray();
        var y = Enumerable.Range(0, 30).Select(_ => random.NextDouble()).ToArray();
        double normal = MannWhitney.PGreater(x, y); // 30 > the exact limit: normal approximation
        double exact = MannWhitney.PGreater(x.Take(25).ToArray(), y.Take(25).ToArray());
        Assert.InRange(normal, 0, 0.01);
        Assert.InRange(exact, 0, 0.01);
    }

    [Fact]
    public void All_samples_equal_is_no_evidence()
    {
        Assert.True(MannWhitney.PGreater([5, 5, 5], [5, 5, 5]) > 0.4);
    }
}
