/* The fault plan of libstrata_fault.so, the test-only LD_PRELOAD shim of tests/fault/.
 *
 * The shim interposes the socket system calls the transports make (send, sendto, sendmsg,
 * write, writev, recv, recvfrom, read, readv, accept, accept4, connect, and syscall() for the
 * raw SYS_sendto / SYS_recvfrom the stream transport uses outside sanitizer builds) and, when
 * a rule of the plan matches a call, fails it or shortens it instead of (or before) calling
 * the real function.
 *
 * A rule matches calls of one operation class on one descriptor (or on any socket when fd is
 * -1): it lets `skip` matching calls through, then acts on the next `times` ones
 * (STRATA_FAULT_FOREVER: on every later one), then is spent. Rules are checked in the order
 * they were added; the first that acts wins (a call counts as "seen" by every live rule that
 * matches it, acting or not).
 *
 * Tests do not link against the shim: they look these functions up with
 * dlsym(RTLD_DEFAULT, ...) (see fault_api.hpp), so that a run without LD_PRELOAD fails
 * clearly instead of passing without faults. Loop-thread use; a mutex makes it safe anyway.
 */
#ifndef STRATA_TESTS_FAULT_PLAN_H
#define STRATA_TESTS_FAULT_PLAN_H

#ifdef __cplusplus
extern "C" {
#endif

/* Operation classes. */
enum {
  STRATA_FAULT_SEND = 0,    /* send, sendto, sendmsg, write, writev, syscall(SYS_sendto) */
  STRATA_FAULT_RECV = 1,    /* recv, recvfrom, read, readv, syscall(SYS_recvfrom) */
  STRATA_FAULT_ACCEPT = 2,  /* accept, accept4 (fd: the listening socket) */
  STRATA_FAULT_CONNECT = 3, /* connect (fd: the connecting socket) */
  STRATA_FAULT_OP_COUNT = 4
};

/* `times` value: act on every matching call from then on. */
#define STRATA_FAULT_FOREVER 0x7fffffff

/* Adds a rule: the matching calls it acts on return -1 with errno @p err (EAGAIN,
 * ECONNRESET, EPIPE, EMFILE, ECONNREFUSED...) without calling the real function. For CONNECT
 * this is a synchronous failure (connect() itself returns it).
 * Returns the rule's id (>= 0), or -1 if the plan is full or the arguments are wrong. */
int strata_fault_add_errno(int op, int fd, int skip, int times, int err);

/* Adds a CONNECT rule that fails asynchronously, as TCP does: the real connect() runs (its
 * result is reported as -1/EINPROGRESS), and the next getsockopt(fd, SOL_SOCKET, SO_ERROR)
 * on that socket reports @p err instead of the real outcome.
 * Returns the rule's id, or -1. */
int strata_fault_add_async_connect_error(int fd, int skip, int times, int err);

/* Adds a rule: the matching SEND or RECV calls it acts on call the real function with at most
 * @p max_bytes bytes (a real short write or short read; @p max_bytes >= 1).
 * Returns the rule's id, or -1. */
int strata_fault_add_short(int op, int fd, int skip, int times, long max_bytes);

/* How many calls rule @p id acted on so far (-1 if no such rule). */
long strata_fault_fired(int id);

/* How many matching calls rule @p id saw so far, acting or not (-1 if no such rule). */
long strata_fault_seen(int id);

/* How many faults of the operation class @p op were injected since the last reset. */
long strata_fault_injected(int op);

/* How many calls of the operation class @p op went through the shim since the last reset
 * (with any fd), faulted or not: proof that the shim sees the calls at all. */
long strata_fault_calls(int op);

/* Removes every rule and zeroes every counter. */
void strata_fault_reset(void);

/* 1: the shim is loaded and resolved its real functions. */
int strata_fault_loaded(void);

#ifdef __cplusplus
}
#endif

#endif
