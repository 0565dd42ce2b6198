namespace PagePool.Cli.Bench;

/// <summary>
/// The Mann-Whitney U test (Wilcoxon rank-sum), the test BenchmarkDotNet's statistical comparison and
/// dotnet/performance's ResultsComparer use: it asks whether one set of samples tends to be larger than another
/// without assuming a normal distribution (benchmark times are skewed: a slow repetition is common, a fast
/// outlier is not). Exact p-values for small samples (no ties), the normal approximation with a tie correction
/// otherwise.
/// </summary>
internal static class MannWhitney
{
    /// <summary>Sample sizes up to which the exact distribution of U is counted.</summary>
    private const int ExactLimit = 25;

    /// <summary>
    /// One-sided p-value for "<paramref name="x"/> tends to be larger than <paramref name="y"/>": the chance, if
    /// both came from one distribution, of a U statistic at least as large as the one observed.
    /// </summary>
    internal static double PGreater(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        if (x.Count == 0 || y.Count == 0) throw new ArgumentException("The Mann-Whitney test needs samples on both sides.");
        double u = 0;
        bool ties = false;
        foreach (var a in x)
            foreach (var b in y)
            {
                if (a > b) u += 1;
                else if (a == b) { u += 0.5; ties = true; }
            }
        int n = x.Count, m = y.Count;
        if (!ties && n <= ExactLimit && m <= ExactLimit) return ExactUpperTail(n, m, (int)u);
        return NormalUpperTail(x, y, u);
    }

    // Number of orderings of n x's and m y's with each U value, f(n, m, u) = f(n-1, m, u-m) + f(n, m-1, u): the
    // largest element is either an x (beating all m y's) or a y. Every ordering is equally likely under H0.
    private static double ExactUpperTail(int n, int m, int u)
    {
        var f = new double[n + 1, m + 1][];
        for (int i = 0; i <= n; i++)
            for (int j = 0; j <= m; j++)
            {
                var row = new double[i * j + 1];
                if (i == 0 || j == 0) row[0] = 1;
                else
                {
                    var withX = f[i - 1, j];
                    var withY = f[i, j - 1];
                    for (int k = 0; k < row.Length; k++)
                        row[k] = (k - j >= 0 && k - j < withX.Length ? withX[k - j] : 0) + (k < withY.Length ? withY[k] : 0);
                }
                f[i, j] = row;
            }
        var counts = f[n, m];
        double total = 0, tail = 0;
        for (int k = 0; k < counts.Length; k++)
        {
            total += counts[k];
            if (k >= u) tail += counts[k];
        }
        return tail / total;
    }

    private static double NormalUpperTail(IReadOnlyList<double> x, IReadOnlyList<double> y, double u)
    {
        int n = x.Count, m = y.Count, total = n + m;
        double tieTerm = x.Concat(y).GroupBy(v => v).Sum(g => Math.Pow(g.Count(), 3) - g.Count());
        double variance = n * (double)m / 12 * (total + 1 - tieTerm / (total * (double)(total - 1)));
        if (variance <= 0) return 1; // every sample equal: no evidence either way
        double z = (u - n * (double)m / 2 - 0.5) / Math.Sqrt(variance); // 0.5: continuity correction
        return 0.5 * Erfc(z / Math.Sqrt(2));
    }

    // Complementary error function, Numerical Recipes' erfcc (fractional error below 1.2e-7 everywhere).
    private static double Erfc(double x)
    {
        double z = Math.Abs(x), t = 1 / (1 + 0.5 * z);
        double r = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
            + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? r : 2 - r;
    }
}
