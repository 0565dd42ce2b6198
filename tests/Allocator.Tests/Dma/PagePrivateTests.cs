using PagePool.Dma;
using Xunit;

namespace PagePool.Allocator.Tests.Dma;

public sealed unsafe class PagePrivateTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(500)]   // a flush queue's 2 x 250 entries: just under one page
    [InlineData(512)]   // exactly one page
    [InlineData(513)]   // one ulong into a second page
    [InlineData(2048)]  // sixteen 1 KiB magazine rooms
    public void The_room_starts_on_a_page_boundary_and_its_pages_lie_wholly_inside_the_storage(int ulongs)
    {
        var room = new PagePrivate(ulongs);

        Assert.Equal(0UL, (ulong)room.Start % 4096);
        long wholePages = (ulongs * 8L + 4095) / 4096 * 4096;
        Assert.True(room.RoomBytes >= wholePages, $"{room.RoomBytes} bytes from the start, the room's pages need {wholePages}");
        for (int i = 0; i < ulongs; i++) room.Start[i] = (ulong)i; // writable to the last one
        Assert.Equal((ulong)(ulongs - 1), room.Start[ulongs - 1]);
    }

    [Fact]
    public void A_room_of_no_ulongs_is_refused()
        => Assert.Throws<ArgumentOutOfRangeException>(() => new PagePrivate(0));

    [Fact]
    public void A_room_too_large_for_one_array_is_refused_not_wrapped()
        => Assert.Throws<OverflowException>(() => new PagePrivate(int.MaxValue)); // 16 GiB: the size in int would wrap

    [Fact]
    public void Rooms_taken_for_two_cpus_never_share_a_page_and_rooms_of_one_cpu_never_overlap()
    {
        var cpu0 = new IovaRcache.RoomArena();
        var cpu1 = new IovaRcache.RoomArena();
        var rooms0 = Enumerable.Range(0, 40).Select(_ => (ulong)cpu0.Take()).ToList(); // more than a chunk holds
        var rooms1 = Enumerable.Range(0, 40).Select(_ => (ulong)cpu1.Take()).ToList();

        var pages0 = rooms0.Select(r => r / 4096).ToHashSet();
        Assert.DoesNotContain(rooms1, r => pages0.Contains(r / 4096) || pages0.Contains((r + 1023) / 4096));
        var sorted = rooms0.Order().ToList();
        for (int i = 1; i < sorted.Count; i++) Assert.True(sorted[i] - sorted[i - 1] >= 1024, "two rooms of one CPU overlap");
    }
}
