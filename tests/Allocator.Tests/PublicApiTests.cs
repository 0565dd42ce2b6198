using PagePool.PublicApi;
using Xunit;

namespace PagePool.Allocator.Tests;

public sealed class PublicApiTests
{
    [Fact]
    public void The_public_API_of_PagePool_Allocator_is_the_one_recorded_in_PublicAPI_txt()
        => PublicApiListing.Check(typeof(PagePool.Pool.PoolAllocator).Assembly, "src/Allocator/PublicAPI.txt");
}
