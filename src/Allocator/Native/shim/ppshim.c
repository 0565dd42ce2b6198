/*
 * ppshim: the few CPU instructions .NET has no intrinsic for.
 *
 * Changing a page to write-combined or uncached costs, on x86, a flush of every cache line of the page
 * (clflush or clflushopt) followed by a fence; PagePool emulates caching changes with exactly that work.
 * clflushopt is weakly ordered, so a batch of lines is flushed in parallel and ordered by one fence at the
 * end; clflush is strongly ordered and serialises. The instruction is chosen once, from CPUID, at load.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/rseq.h>

#define PP_LINE 64

enum { PP_FLUSH_NONE = 0, PP_FLUSH_CLFLUSH = 1, PP_FLUSH_CLFLUSHOPT = 2 };

static int pp_kind = -1;

/* Which flush instruction this CPU has: read CPUID once. */
static int pp_detect(void)
{
	unsigned a, b, c, d;
	int kind = PP_FLUSH_NONE;

	if (__get_cpuid(1, &a, &b, &c, &d) && (d & (1u << 19)))
		kind = PP_FLUSH_CLFLUSH;
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 23)))
		kind = PP_FLUSH_CLFLUSHOPT;
	return kind;
}

__attribute__((constructor)) static void pp_init(void)
{
	pp_kind = pp_detect();
}

/* The flush instruction in use: 0 none, 1 clflush, 2 clflushopt. */
int pp_flush_kind(void)
{
	if (pp_kind < 0)
		pp_kind = pp_detect();
	return pp_kind;
}

/* Flush every cache line of [p, p+len) without a trailing fence; the caller fences once per batch. */
void pp_flush_range_nofence(void *p, size_t len)
{
	uintptr_t line = (uintptr_t)p & ~(uintptr_t)(PP_LINE - 1);
	uintptr_t end = (uintptr_t)p + len;

	if (pp_flush_kind() == PP_FLUSH_CLFLUSHOPT) {
		for (; line < end; line += PP_LINE)
			__asm__ volatile("clflushopt %0" : "+m"(*(volatile char *)line));
	} else if (pp_kind == PP_FLUSH_CLFLUSH) {
		for (; line < end; line += PP_LINE)
			__asm__ volatile("clflush %0" : "+m"(*(volatile char *)line));
	}
}

/* Full fence: orders every flush and non-temporal store before it (mb() in Linux's clflush_cache_range). */
void pp_fence(void)
{
	__asm__ volatile("mfence" ::: "memory");
}

/* Flush a range and fence: one caching change of one page. */
void pp_flush_range(void *p, size_t len)
{
	pp_fence();
	pp_flush_range_nofence(p, len);
	pp_fence();
}

/*
 * The CPU this thread runs on now. glibc registers a restartable-sequences area for every thread and the
 * kernel rewrites its cpu_id on every migration, so this is one load from the thread pointer: exact, where a
 * cached processor number can be stale for thousands of calls. sched_getcpu() when rseq is not registered.
 */
int pp_current_cpu(void)
{
	if (__rseq_size > 0) {
		const struct rseq *rs = (const struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
		int cpu = (int)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED);
		if (cpu >= 0)
			return cpu;
	}
	return sched_getcpu();
}

/*
 * The address of this thread's rseq cpu_id, or NULL when rseq is not registered: the caller keeps it per thread
 * and reads the CPU with one load, without a call.
 */
const volatile unsigned int *pp_cpu_id_address(void)
{
	if (__rseq_size > 0) {
		const struct rseq *rs = (const struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
		if ((int)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED) >= 0)
			return &rs->cpu_id;
	}
	return 0;
}
