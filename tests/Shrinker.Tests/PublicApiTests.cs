using PagePool.PublicApi;
using Xunit;

namespace PagePool.Shrinker.Tests;

public sealed class PublicApiTests
{
    [Fact]
    public void The_public_API_of_PagePool_Shrinker_is_the_one_recorded_in_PublicAPI_txt()
        => PublicApiListing.Check(typeof(PagePool.Shrinker.IShrinker).Assembly, "src/Shrinker/PublicAPI.txt");
}
