/* libstrata_fault.so: a test-only LD_PRELOAD shim that injects faults into the socket system
 * calls of the transports, per the plan of fault_plan.h. Never linked into a library. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fault_plan.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- The real functions ------------------------------------------------------------- */

typedef ssize_t (*send_fn)(int, const void*, size_t, int);
typedef ssize_t (*sendto_fn)(int, const void*, size_t, int, const struct sockaddr*, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr*, int);
typedef ssize_t (*write_fn)(int, const void*, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec*, int);
typedef ssize_t (*recv_fn)(int, void*, size_t, int);
typedef ssize_t (*recvfrom_fn)(int, void*, size_t, int, struct sockaddr*, socklen_t*);
typedef ssize_t (*read_fn)(int, void*, size_t);
typedef ssize_t (*readv_fn)(int, const struct iovec*, int);
typedef int (*accept_fn)(int, struct sockaddr*, socklen_t*);
typedef int (*accept4_fn)(int, struct sockaddr*, socklen_t*, int);
typedef int (*connect_fn)(int, const struct sockaddr*, socklen_t);
typedef int (*getsockopt_fn)(int, int, int, void*, socklen_t*);
typedef long (*syscall_fn)(long, ...);

static send_fn real_send;
static sendto_fn real_sendto;
static sendmsg_fn real_sendmsg;
static write_fn real_write;
static writev_fn real_writev;
static recv_fn real_recv;
static recvfrom_fn real_recvfrom;
static read_fn real_read;
static readv_fn real_readv;
static accept_fn real_accept;
static accept4_fn real_accept4;
static connect_fn real_connect;
static getsockopt_fn real_getsockopt;
static syscall_fn real_syscall;
static atomic_int resolved;

#define RESOLVE(name) real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name)

static void resolve_all(void) {
  RESOLVE(send);
  RESOLVE(sendto);
  RESOLVE(sendmsg);
  RESOLVE(write);
  RESOLVE(writev);
  RESOLVE(recv);
  RESOLVE(recvfrom);
  RESOLVE(read);
  RESOLVE(readv);
  RESOLVE(accept);
  RESOLVE(accept4);
  RESOLVE(connect);
  RESOLVE(getsockopt);
  RESOLVE(syscall);
  atomic_store(&resolved, 1);
}

static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;
static inline void ensure(void) {
  if (!atomic_load_explicit(&resolved, memory_order_acquire)) pthread_once(&resolve_once, resolve_all);
}

__attribute__((constructor)) static void shim_init(void) { ensure(); }

/* ---- The plan ------------------------------------------------------------------------ */

enum { KIND_ERRNO, KIND_SHORT, KIND_ASYNC_CONNECT };

struct rule {
  int used;
  int op;
  int fd;
  int kind;
  long skip;
  long times;
  int err;
  long max_bytes;
  long seen;
  long fired;
};

#define MAX_RULES 64
#define MAX_PENDING 64

static struct rule rules[MAX_RULES];
static int rule_count;
static atomic_int live_rules; /* rules not yet spent: the lock-free fast path when 0 */
static atomic_long injected[STRATA_FAULT_OP_COUNT];
static atomic_long calls[STRATA_FAULT_OP_COUNT];
static struct {
  int fd;
  int err;
} pending_so_error[MAX_PENDING]; /* async connect failures: fd -> SO_ERROR to report */
static int pending_count;
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;

static int is_socket(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* What to do with one call. */
struct decision {
  int kind; /* -1: nothing */
  int err;
  long max_bytes;
};

static struct decision decide(int op, int fd) {
  struct decision d = {-1, 0, 0};
  atomic_fetch_add(&calls[op], 1);
  if (atomic_load(&live_rules) == 0) return d;
  pthread_mutex_lock(&plan_lock);
  for (int i = 0; i < rule_count; ++i) {
    struct rule* r = &rules[i];
    if (!r->used || r->op != op || (r->fd != -1 && r->fd != fd)) continue;
    if (r->fired >= r->times) continue; /* spent */
    const long n = r->seen++;
    if (n < r->skip || d.kind != -1) continue;
    r->fired++;
    if (r->fired >= r->times) atomic_fetch_sub(&live_rules, 1);
    d.kind = r->kind;
    d.err = r->err;
    d.max_bytes = r->max_bytes;
  }
  if (d.kind != -1) atomic_fetch_add(&injected[op], 1);
  pthread_mutex_unlock(&plan_lock);
  return d;
}

/* The decision for a read or write on a descriptor that may not be a socket (the loop's
 * eventfd, a pipe, a terminal): those are never faulted, nor counted. */
static struct decision decide_rw(int op, int fd) {
  struct decision d = {-1, 0, 0};
  if (!is_socket(fd)) return d;
  return decide(op, fd);
}

static int add_rule(int op, int fd, int skip, int times, int kind, int err, long max_bytes) {
  if (op < 0 || op >= STRATA_FAULT_OP_COUNT || skip < 0 || times <= 0) return -1;
  pthread_mutex_lock(&plan_lock);
  int id = -1;
  if (rule_count < MAX_RULES) {
    id = rule_count++;
    struct rule r = {1, op, fd, kind, skip, times, err, max_bytes, 0, 0};
    rules[id] = r;
    atomic_fetch_add(&live_rules, 1);
  }
  pthread_mutex_unlock(&plan_lock);
  return id;
}

EXPORT int strata_fault_add_errno(int op, int fd, int skip, int times, int err) {
  if (err <= 0) return -1;
  return add_rule(op, fd, skip, times, KIND_ERRNO, err, 0);
}

EXPORT int strata_fault_add_async_connect_error(int fd, int skip, int times, int err) {
  if (err <= 0) return -1;
  return add_rule(STRATA_FAULT_CONNECT, fd, skip, times, KIND_ASYNC_CONNECT, err, 0);
}

EXPORT int strata_fault_add_short(int op, int fd, int skip, int times, long max_bytes) {
  if ((op != STRATA_FAULT_SEND && op != STRATA_FAULT_RECV) || max_bytes < 1) return -1;
  return add_rule(op, fd, skip, times, KIND_SHORT, 0, max_bytes);
}

static long rule_field(int id, int fired) {
  long v = -1;
  pthread_mutex_lock(&plan_lock);
  if (id >= 0 && id < rule_count) v = fired ? rules[id].fired : rules[id].seen;
  pthread_mutex_unlock(&plan_lock);
  return v;
}

EXPORT long strata_fault_fired(int id) { return rule_field(id, 1); }
EXPORT long strata_fault_seen(int id) { return rule_field(id, 0); }

EXPORT long strata_fault_injected(int op) {
  if (op < 0 || op >= STRATA_FAULT_OP_COUNT) return -1;
  return atomic_load(&injected[op]);
}

EXPORT long strata_fault_calls(int op) {
  if (op < 0 || op >= STRATA_FAULT_OP_COUNT) return -1;
  return atomic_load(&calls[op]);
}

EXPORT void strata_fault_reset(void) {
  pthread_mutex_lock(&plan_lock);
  rule_count = 0;
  pending_count = 0;
  atomic_store(&live_rules, 0);
  for (int i = 0; i < STRATA_FAULT_OP_COUNT; ++i) {
    atomic_store(&injected[i], 0);
    atomic_store(&calls[i], 0);
  }
  pthread_mutex_unlock(&plan_lock);
}

EXPORT int strata_fault_loaded(void) {
  ensure();
  return real_send && real_sendmsg && real_recv && real_accept4 && real_connect &&
         real_getsockopt && real_syscall;
}

/* ---- Helpers ------------------------------------------------------------------------- */

static inline size_t clamp(size_t len, long max_bytes) {
  return len > (size_t)max_bytes ? (size_t)max_bytes : len;
}

/* @p iov cut to at most @p max_bytes bytes in @p out (of capacity @p cap); returns the count. */
static int clamp_iov(const struct iovec* iov, int count, long max_bytes, struct iovec* out,
                     int cap) {
  size_t left = (size_t)max_bytes;
  int n = 0;
  for (int i = 0; i < count && n < cap && left > 0; ++i) {
    if (iov[i].iov_len == 0) continue;
    out[n] = iov[i];
    if (out[n].iov_len > left) out[n].iov_len = left;
    left -= out[n].iov_len;
    ++n;
  }
  return n;
}

#define FAIL_WITH(e) \
  do {               \
    errno = (e);     \
    return -1;       \
  } while (0)

/* ---- Sending ------------------------------------------------------------------------- */

EXPORT ssize_t send(int fd, const void* buf, size_t len, int flags) {
  ensure();
  struct decision d = decide(STRATA_FAULT_SEND, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) len = clamp(len, d.max_bytes);
  return real_send(fd, buf, len, flags);
}

EXPORT ssize_t sendto(int fd, const void* buf, size_t len, int flags,
                      const struct sockaddr* addr, socklen_t addrlen) {
  ensure();
  struct decision d = decide(STRATA_FAULT_SEND, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) len = clamp(len, d.max_bytes);
  return real_sendto(fd, buf, len, flags, addr, addrlen);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
  ensure();
  struct decision d = decide(STRATA_FAULT_SEND, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) {
    struct iovec iov[64];
    struct msghdr m = *msg;
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)clamp_iov(msg->msg_iov, (int)msg->msg_iovlen, d.max_bytes, iov, 64);
    return real_sendmsg(fd, &m, flags);
  }
  return real_sendmsg(fd, msg, flags);
}

EXPORT ssize_t write(int fd, const void* buf, size_t len) {
  ensure();
  struct decision d = decide_rw(STRATA_FAULT_SEND, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) len = clamp(len, d.max_bytes);
  return real_write(fd, buf, len);
}

EXPORT ssize_t writev(int fd, const struct iovec* iov, int count) {
  ensure();
  struct decision d = decide_rw(STRATA_FAULT_SEND, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) {
    struct iovec cut[64];
    return real_writev(fd, cut, clamp_iov(iov, count, d.max_bytes, cut, 64));
  }
  return real_writev(fd, iov, count);
}

/* ---- Receiving ----------------------------------------------------------------------- */

EXPORT ssize_t recv(int fd, void* buf, size_t len, int flags) {
  ensure();
  struct decision d = decide(STRATA_FAULT_RECV, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) len = clamp(len, d.max_bytes);
  return real_recv(fd, buf, len, flags);
}

EXPORT ssize_t recvfrom(int fd, void* buf, size_t len, int flags, struct sockaddr* addr,
                        socklen_t* addrlen) {
  ensure();
  struct decision d = decide(STRATA_FAULT_RECV, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) len = clamp(len, d.max_bytes);
  return real_recvfrom(fd, buf, len, flags, addr, addrlen);
}

EXPORT ssize_t read(int fd, void* buf, size_t len) {
  ensure();
  struct decision d = decide_rw(STRATA_FAULT_RECV, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) len = clamp(len, d.max_bytes);
  return real_read(fd, buf, len);
}

EXPORT ssize_t readv(int fd, const struct iovec* iov, int count) {
  ensure();
  struct decision d = decide_rw(STRATA_FAULT_RECV, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_SHORT) {
    struct iovec cut[64];
    return real_readv(fd, cut, clamp_iov(iov, count, d.max_bytes, cut, 64));
  }
  return real_readv(fd, iov, count);
}

/* ---- Accepting and connecting -------------------------------------------------------- */

EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* addrlen) {
  ensure();
  struct decision d = decide(STRATA_FAULT_ACCEPT, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  return real_accept(fd, addr, addrlen);
}

EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* addrlen, int flags) {
  ensure();
  struct decision d = decide(STRATA_FAULT_ACCEPT, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  return real_accept4(fd, addr, addrlen, flags);
}

EXPORT int connect(int fd, const struct sockaddr* addr, socklen_t addrlen) {
  ensure();
  struct decision d = decide(STRATA_FAULT_CONNECT, fd);
  if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
  if (d.kind == KIND_ASYNC_CONNECT) {
    const int rc = real_connect(fd, addr, addrlen);
    if (rc < 0 && errno != EINPROGRESS) return rc; /* a real synchronous failure */
    pthread_mutex_lock(&plan_lock);
    if (pending_count < MAX_PENDING) {
      pending_so_error[pending_count].fd = fd;
      pending_so_error[pending_count].err = d.err;
      ++pending_count;
    }
    pthread_mutex_unlock(&plan_lock);
    FAIL_WITH(EINPROGRESS);
  }
  return real_connect(fd, addr, addrlen);
}

EXPORT int getsockopt(int fd, int level, int name, void* value, socklen_t* len) {
  ensure();
  if (level == SOL_SOCKET && name == SO_ERROR && value != NULL && len != NULL &&
      *len >= (socklen_t)sizeof(int)) {
    int err = 0;
    pthread_mutex_lock(&plan_lock);
    for (int i = 0; i < pending_count; ++i) {
      if (pending_so_error[i].fd != fd) continue;
      err = pending_so_error[i].err;
      pending_so_error[i] = pending_so_error[--pending_count];
      break;
    }
    pthread_mutex_unlock(&plan_lock);
    if (err != 0) {
      /* Consume the real pending error too, as a real SO_ERROR read would. */
      int real_err = 0;
      socklen_t real_len = sizeof real_err;
      real_getsockopt(fd, level, name, &real_err, &real_len);
      *(int*)value = err;
      *len = sizeof(int);
      return 0;
    }
  }
  return real_getsockopt(fd, level, name, value, len);
}

/* ---- syscall(): the raw SYS_sendto / SYS_recvfrom of the stream transport ------------- */

EXPORT long syscall(long number, ...) {
  ensure();
  va_list ap;
  va_start(ap, number);
  long a1 = va_arg(ap, long);
  long a2 = va_arg(ap, long);
  long a3 = va_arg(ap, long);
  long a4 = va_arg(ap, long);
  long a5 = va_arg(ap, long);
  long a6 = va_arg(ap, long);
  va_end(ap);
#ifdef SYS_sendto
  if (number == SYS_sendto || number == SYS_recvfrom) {
    const int op = number == SYS_sendto ? STRATA_FAULT_SEND : STRATA_FAULT_RECV;
    struct decision d = decide(op, (int)a1);
    if (d.kind == KIND_ERRNO) FAIL_WITH(d.err);
    if (d.kind == KIND_SHORT) a3 = (long)clamp((size_t)a3, d.max_bytes);
  }
#endif
  return real_syscall(number, a1, a2, a3, a4, a5, a6);
}
