/*
 * tls_load: a single-threaded epoll TLS load generator on OpenSSL, for bench/run_tls.sh.
 *
 *   tls_load --port P --mode handshake|echo|bulk [--host 127.0.0.1] [--connections C]
 *            [--size BYTES] [--duration S | --count N] [--warmup S] [--window BYTES]
 *            [--tls 1.2|1.3] [--ciphersuites LIST] [--ciphers LIST] [--groups LIST]
 *            [--server-pid PID] [--timeout S] [--stall S]
 *
 * handshake: C connections at a time, each doing one full handshake and closing: TCP connect,
 *   SSL_connect, close_notify, then it waits for the server's close (its close_notify or EOF)
 *   and resets the socket (SO_LINGER 0, so no TIME_WAIT is left behind). No resumption: the
 *   client context has SSL_OP_NO_TICKET, its session cache is off, and every connection is a
 *   new SSL without a session; the tickets a TLS 1.3 server sends anyway are read and dropped.
 *   A handshake counts when the whole cycle has ended (the server's close seen).
 * echo: C persistent connections, each sending a SIZE-byte message (one SSL_write), waiting
 *   for the whole echo, checking every byte, and sending the next (ping-pong).
 * bulk: C connections (default 1) each writing SIZE-byte SSL_writes continuously and reading
 *   the echo back at the same time, with at most WINDOW bytes unechoed (default
 *   max(4 * SIZE, 256 KiB)); every echoed byte is checked. An operation is SIZE bytes echoed.
 *
 * Byte k of connection c's stream is pattern[(k + 4099 c) mod 65521] (a pseudo-random
 * pattern), so lost, duplicated, reordered or crossed bytes fail the check.
 *
 * The client pins the protocol version (default TLS 1.3, --tls 1.2 for TLS 1.2), the TLS 1.3
 * suite (default TLS_AES_128_GCM_SHA256), the TLS 1.2 cipher list (default
 * ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256, whichever the certificate
 * allows) and the key-exchange group (default X25519), so every server negotiates the same.
 * It does not verify the server's certificate (the CertificateVerify signature is still
 * checked, as the protocol requires).
 *
 * The run: connect, a warm-up of --warmup seconds (not counted), then the measured window of
 * --duration seconds, or until --count operations have completed after the warm-up (then no
 * new operation starts; those in flight are cut off, a constant share that the difference
 * method of run_tls.py's instruction counts cancels).
 * With --server-pid, the server's utime + stime (/proc/PID/stat) is read at the start and the
 * end of the window.
 *
 * It gives up after --timeout seconds in all (default 120), or when nothing has completed and no
 * byte has arrived for --stall seconds (default 10).
 *
 * Prints one JSON object on stdout: mode, ops (handshakes or requests), seconds, ops_s,
 * bytes, mib_s, p50_us / p99_us (echo: round trip; handshake: connect to close), errors,
 * first_error, version, cipher, server_cpu_s (= server_user_s + server_sys_s), server_util
 * (server CPU / wall time), server_us_per_op, server_us_per_mib, server_user_us_per_mib,
 * client_cpu_s. Exit status 0 when errors == 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PERIOD 65521u /* prime */
#define CONN_STRIDE 4099u
#define MAX_EVENTS 256
#define RECV_BUF (64 * 1024)

enum { MODE_HANDSHAKE, MODE_ECHO, MODE_BULK };

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_mode = -1;
static int opt_conns = 0;
static size_t opt_size = 1024;
static double opt_duration = 2.0;
static uint64_t opt_count = 0;
static double opt_warmup = 0.5;
static size_t opt_window = 0;
static int opt_tls12 = 0;
static const char *opt_suites = "TLS_AES_128_GCM_SHA256";
static const char *opt_ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
static const char *opt_groups = "X25519";
static int opt_server_pid = 0;
static double opt_timeout = 120.0;
static double opt_stall = 10.0;

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

static uint8_t *pattern; /* PERIOD + max_io bytes: the period, then its start again */
static size_t max_io;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "tls_load: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void die_ssl(const char *what) {
  char buf[256];
  unsigned long e = ERR_get_error();
  ERR_error_string_n(e, buf, sizeof buf);
  fprintf(stderr, "tls_load: %s: %s\n", what, e ? buf : "unknown OpenSSL error");
  exit(2);
}

/* ---- latency samples (microseconds, float), sorted at the end ---- */
static float *lat;
static size_t lat_n, lat_cap;
static void lat_add(uint64_t ns) {
  if (lat_n == lat_cap) {
    size_t cap = lat_cap ? lat_cap * 2 : 65536;
    float *p = realloc(lat, cap * sizeof *p);
    if (!p) return;
    lat = p, lat_cap = cap;
  }
  lat[lat_n++] = (float)((double)ns / 1000.0);
}
static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}
static double lat_pct(double p) {
  if (lat_n == 0) return 0;
  size_t i = (size_t)(p * (double)lat_n);
  if (i >= lat_n) i = lat_n - 1;
  return lat[i];
}

/* ---- server CPU: utime and stime of /proc/PID/stat, seconds ---- */
typedef struct {
  double user, sys;
  int ok;
} Cpu;

static Cpu server_cpu(int pid) {
  Cpu r = {0, 0, 0};
  if (pid <= 0) return r;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return r;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return r;
  unsigned long long ut = 0, st = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return r;
  double hz = (double)sysconf(_SC_CLK_TCK);
  r.user = (double)ut / hz;
  r.sys = (double)st / hz;
  r.ok = 1;
  return r;
}

static double client_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

/* ---- connections ---- */
typedef enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_RUN, S_CLOSING } State;

typedef struct {
  int fd;
  SSL *ssl;
  State state;
  unsigned index;    /* stream pattern offset: a fresh index per connection */
  uint64_t sent;     /* stream bytes written */
  uint64_t received; /* stream bytes read and checked */
  uint64_t target;   /* echo: end offset of the message in flight */
  uint64_t t_start;  /* echo: send time of the message; handshake: connect time */
  int active;        /* echo: a message is in flight */
  unsigned events;   /* epoll events armed */
} Conn;

static int ep;
static SSL_CTX *ctx;
static struct sockaddr_in server_addr;
static unsigned next_index;
static uint64_t errors;
static const char *first_error;
static char first_error_buf[256];
static char neg_version[32], neg_cipher[64];

/* Counts an error; the first one's text is kept (with OpenSSL's reason or errno's, when set). */
static void fail(const char *what) {
  errors++;
  if (!first_error) {
    unsigned long e = ERR_peek_error();
    if (e) {
      char b[160];
      ERR_error_string_n(e, b, sizeof b);
      snprintf(first_error_buf, sizeof first_error_buf, "%s: %s", what, b);
    } else {
      snprintf(first_error_buf, sizeof first_error_buf, "%s%s%s", what, errno ? ": " : "",
               errno ? strerror(errno) : "");
    }
    first_error = first_error_buf;
  }
  ERR_clear_error();
}

static void arm(Conn *c, unsigned events) {
  if (c->events == events) return;
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
  c->events = events;
}

/* Closes with a reset so that no TIME_WAIT state is left behind (many connections). */
static void conn_close(Conn *c) {
  if (c->ssl) SSL_free(c->ssl);
  c->ssl = NULL;
  if (c->fd >= 0) {
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd); /* also leaves the epoll set */
  }
  c->fd = -1;
  c->state = S_FREE;
}

static int conn_open(Conn *c, uint64_t now) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->index = next_index++;
  c->t_start = now;
  c->state = S_CONNECTING;
  c->events = EPOLLOUT;
  struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
  if (connect(c->fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 &&
      errno != EINPROGRESS) {
    fail("connect");
    conn_close(c);
    return -1;
  }
  return 0;
}

static const uint8_t *stream_at(const Conn *c, uint64_t off) {
  return pattern + (off + (uint64_t)c->index * CONN_STRIDE) % PERIOD;
}

/* what SSL_get_error says to wait for: 1 read, 2 write, 0 done/other, -1 error */
static int ssl_wait(Conn *c, int r, const char *what) {
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) return 1;
  if (e == SSL_ERROR_WANT_WRITE) return 2;
  if (e == SSL_ERROR_ZERO_RETURN) return 3;
  if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && (r == 0 || errno == 0)) return 4;
  fail(what);
  return -1;
}

/* counters shared with the loop */
static int measuring;      /* in the measured window */
static int issuing = 1;    /* new operations may start */
static uint64_t ops;       /* completed operations in the window */
static uint64_t ops_all;   /* completed operations, warm-up included */
static uint64_t bytes;     /* echoed bytes in the window */

static uint64_t last_progress; /* when an operation last completed or bytes last arrived */

static void op_done(uint64_t t_start, uint64_t now) {
  last_progress = now;
  ops_all++;
  if (measuring) {
    ops++;
    if (opt_mode != MODE_BULK) lat_add(now - t_start);
    if (opt_count && ops >= opt_count) issuing = 0;
  }
}

static void record_negotiated(Conn *c) {
  if (neg_version[0]) return;
  snprintf(neg_version, sizeof neg_version, "%s", SSL_get_version(c->ssl));
  snprintf(neg_cipher, sizeof neg_cipher, "%s", SSL_get_cipher_name(c->ssl));
}

/* echo/bulk: writes what may be written now. Returns -1 on error. */
static int pump_write(Conn *c, uint64_t now) {
  for (;;) {
    size_t want = 0;
    if (opt_mode == MODE_ECHO) {
      if (!c->active) {
        if (!issuing) return 0;
        c->active = 1;
        c->target = c->sent + opt_size;
        c->t_start = now;
      }
      if (c->sent >= c->target) return 0;
      want = (size_t)(c->target - c->sent);
    } else {
      if (!issuing) return 0;
      uint64_t out = c->sent - c->received;
      if (out + opt_size > opt_window) return 0;
      want = opt_size;
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, stream_at(c, c->sent), (int)want);
    if (r > 0) {
      c->sent += (uint64_t)r;
      if (opt_mode == MODE_ECHO && c->sent >= c->target) return 0;
      continue;
    }
    int w = ssl_wait(c, r, "SSL_write");
    if (w == 2) {
      arm(c, EPOLLIN | EPOLLOUT);
      return 0;
    }
    if (w == 1) return 0; /* not after the handshake, but harmless */
    if (w >= 3) errno = 0, fail("server closed the connection");
    return -1;
  }
}

static uint8_t rbuf[RECV_BUF];

/* echo/bulk: reads and checks what has arrived. Returns -1 on error. */
static int pump_read(Conn *c, uint64_t now) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, rbuf, sizeof rbuf);
    if (r > 0) {
      if ((uint64_t)r > c->sent - c->received) {
        errno = 0, fail("more bytes echoed than sent");
        return -1;
      }
      if (memcmp(rbuf, stream_at(c, c->received), (size_t)r) != 0) {
        errno = 0, fail("echoed bytes differ from those sent");
        return -1;
      }
      c->received += (uint64_t)r;
      last_progress = now;
      if (measuring) bytes += (uint64_t)r;
      if (opt_mode == MODE_ECHO && c->active && c->received >= c->target) {
        c->active = 0;
        op_done(c->t_start, now);
        if (pump_write(c, now) < 0) return -1;
      } else if (opt_mode == MODE_BULK) {
        /* one operation per SIZE bytes echoed (what --count counts in bulk mode) */
        for (uint64_t k = (c->received - (uint64_t)r) / opt_size; k < c->received / opt_size; k++)
          op_done(now, now);
        if (pump_write(c, now) < 0) return -1;
      }
      continue;
    }
    int w = ssl_wait(c, r, "SSL_read");
    if (w == 1) return 0;
    if (w == 2) {
      arm(c, EPOLLIN | EPOLLOUT);
      return 0;
    }
    if (w >= 3) errno = 0, fail("server closed the connection");
    return -1;
  }
}

/* handshake mode, after SSL_connect: close_notify sent, read until the server closes. */
static void closing_step(Conn *c, uint64_t now) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, rbuf, sizeof rbuf);
    if (r > 0) continue; /* nothing is expected; drop it */
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
      arm(c, EPOLLIN);
      return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
      arm(c, EPOLLIN | EPOLLOUT);
      return;
    }
    /* the server's close_notify (ZERO_RETURN), a plain EOF, or a reset after its close */
    if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) {
      op_done(c->t_start, now);
    } else {
      errno = 0, fail("reading the server's close");
    }
    conn_close(c);
    return;
  }
}

static void handshake_step(Conn *c, uint64_t now) {
  ERR_clear_error();
  int r = SSL_connect(c->ssl);
  if (r == 1) {
    record_negotiated(c);
    if (opt_mode == MODE_HANDSHAKE) {
      c->state = S_CLOSING;
      ERR_clear_error();
      int s = SSL_shutdown(c->ssl); /* sends close_notify */
      if (s < 0) {
        int e = SSL_get_error(c->ssl, s);
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
          fail("SSL_shutdown");
          conn_close(c);
          return;
        }
      }
      closing_step(c, now);
      return;
    }
    c->state = S_RUN;
    arm(c, EPOLLIN);
    if (pump_write(c, now) < 0) conn_close(c);
    return;
  }
  int w = ssl_wait(c, r, "SSL_connect");
  if (w == 1) {
    arm(c, EPOLLIN);
  } else if (w == 2) {
    arm(c, EPOLLOUT);
  } else {
    if (w >= 3) errno = 0, fail("SSL_connect: the server closed the connection");
    conn_close(c);
  }
}

static void conn_event(Conn *c, unsigned events, uint64_t now) {
  switch (c->state) {
    case S_CONNECTING: {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) {
        errno = err;
        fail("connect");
        conn_close(c);
        return;
      }
      c->ssl = SSL_new(ctx);
      if (!c->ssl) die_ssl("SSL_new");
      SSL_set_fd(c->ssl, c->fd);
      c->state = S_HANDSHAKE;
      handshake_step(c, now);
      return;
    }
    case S_HANDSHAKE:
      handshake_step(c, now);
      return;
    case S_CLOSING:
      closing_step(c, now);
      return;
    case S_RUN:
      if (events & EPOLLOUT) arm(c, EPOLLIN);
      if (pump_read(c, now) < 0 || pump_write(c, now) < 0) conn_close(c);
      return;
    case S_FREE:
      return;
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: tls_load --port P --mode handshake|echo|bulk [--host H] [--connections C]\n"
          "                [--size BYTES] [--duration S | --count N] [--warmup S]\n"
          "                [--window BYTES] [--tls 1.2|1.3] [--ciphersuites LIST]\n"
          "                [--ciphers LIST] [--groups LIST] [--server-pid PID] [--timeout S]\n"
          "                [--stall S]\n");
  exit(2);
}

static void parse(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, 0, 'h'},       {"port", required_argument, 0, 'p'},
      {"mode", required_argument, 0, 'm'},       {"connections", required_argument, 0, 'c'},
      {"size", required_argument, 0, 's'},       {"duration", required_argument, 0, 'd'},
      {"count", required_argument, 0, 'n'},      {"warmup", required_argument, 0, 'w'},
      {"window", required_argument, 0, 'W'},     {"tls", required_argument, 0, 'T'},
      {"ciphersuites", required_argument, 0, 'S'}, {"ciphers", required_argument, 0, 'C'},
      {"groups", required_argument, 0, 'g'},     {"server-pid", required_argument, 0, 'P'},
      {"timeout", required_argument, 0, 't'},    {"stall", required_argument, 0, 'X'},
      {"help", no_argument, 0, '?'},
      {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, 0)) != -1) {
    switch (ch) {
      case 'h': opt_host = optarg; break;
      case 'p': opt_port = atoi(optarg); break;
      case 'm':
        if (strcmp(optarg, "handshake") == 0) opt_mode = MODE_HANDSHAKE;
        else if (strcmp(optarg, "echo") == 0) opt_mode = MODE_ECHO;
        else if (strcmp(optarg, "bulk") == 0) opt_mode = MODE_BULK;
        else usage();
        break;
      case 'c': opt_conns = atoi(optarg); break;
      case 's': opt_size = (size_t)strtoull(optarg, 0, 10); break;
      case 'd': opt_duration = atof(optarg); break;
      case 'n': opt_count = strtoull(optarg, 0, 10); break;
      case 'w': opt_warmup = atof(optarg); break;
      case 'W': opt_window = (size_t)strtoull(optarg, 0, 10); break;
      case 'T':
        if (strcmp(optarg, "1.2") == 0) opt_tls12 = 1;
        else if (strcmp(optarg, "1.3") == 0) opt_tls12 = 0;
        else usage();
        break;
      case 'S': opt_suites = optarg; break;
      case 'C': opt_ciphers = optarg; break;
      case 'g': opt_groups = optarg; break;
      case 'P': opt_server_pid = atoi(optarg); break;
      case 't': opt_timeout = atof(optarg); break;
      case 'X': opt_stall = atof(optarg); break;
      default: usage();
    }
  }
  if (optind != argc || opt_mode < 0 || opt_port <= 0 || opt_port > 65535 || opt_size == 0 ||
      opt_size > (1u << 24) || opt_conns < 0)
    usage();
  if (opt_conns == 0) opt_conns = opt_mode == MODE_HANDSHAKE ? 8 : opt_mode == MODE_ECHO ? 10 : 1;
  if (opt_window == 0) opt_window = opt_size * 4 > 262144 ? opt_size * 4 : 262144;
  if (opt_window < opt_size) opt_window = opt_size;
}

static void make_ctx(void) {
  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) die_ssl("SSL_CTX_new");
  int v = opt_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx, v) || !SSL_CTX_set_max_proto_version(ctx, v))
    die_ssl("protocol version");
  if (!SSL_CTX_set_ciphersuites(ctx, opt_suites)) die_ssl("--ciphersuites");
  if (!SSL_CTX_set_cipher_list(ctx, opt_ciphers)) die_ssl("--ciphers");
  if (!SSL_CTX_set1_groups_list(ctx, opt_groups)) die_ssl("--groups");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);
}

int main(int argc, char **argv) {
  parse(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa_sig;
  memset(&sa_sig, 0, sizeof sa_sig);
  sa_sig.sa_handler = on_signal;
  sigaction(SIGINT, &sa_sig, 0);
  sigaction(SIGTERM, &sa_sig, 0);

  memset(&server_addr, 0, sizeof server_addr);
  server_addr.sin_family = AF_INET;
  server_addr.sin_port = htons((uint16_t)opt_port);
  if (inet_pton(AF_INET, opt_host, &server_addr.sin_addr) != 1) {
    fprintf(stderr, "tls_load: bad IPv4 address %s\n", opt_host);
    return 2;
  }
  make_ctx();

  max_io = opt_size > RECV_BUF ? opt_size : RECV_BUF;
  pattern = malloc(PERIOD + max_io);
  if (!pattern) die("malloc");
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < PERIOD; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    pattern[i] = (uint8_t)(x >> 24);
  }
  for (size_t i = 0; i < max_io; i++) pattern[PERIOD + i] = pattern[i % PERIOD];

  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  Conn *conns = calloc((size_t)opt_conns, sizeof *conns);
  if (!conns) die("calloc");
  uint64_t t0 = now_ns();
  last_progress = t0;
  for (int i = 0; i < opt_conns; i++) {
    conns[i].fd = -1;
    conn_open(&conns[i], t0);
  }

  uint64_t hard_deadline = t0 + (uint64_t)(opt_timeout * 1e9);
  uint64_t warm_end = t0 + (uint64_t)(opt_warmup * 1e9);
  int warm = opt_warmup > 0;
  uint64_t t_measure = 0, t_end = 0, measure_end = UINT64_MAX;
  Cpu scpu0 = {0, 0, 0}, scpu1 = {0, 0, 0};
  double ccpu0 = 0, ccpu1 = 0;
  int timed_out = 0;
  if (!warm) {
    measuring = 1;
    t_measure = t0;
    scpu0 = server_cpu(opt_server_pid);
    ccpu0 = client_cpu_s();
    if (!opt_count) measure_end = t0 + (uint64_t)(opt_duration * 1e9);
  }
  struct epoll_event events[MAX_EVENTS];

  for (;;) {
    uint64_t now = now_ns();
    if (stop_signal) {
      errno = 0, fail("interrupted");
      break;
    }
    if (now - last_progress > (uint64_t)(opt_stall * 1e9)) {
      errno = 0, fail("stalled: no progress for --stall seconds");
      break;
    }
    if (now >= hard_deadline) {
      timed_out = 1;
      errno = 0, fail("timed out (--timeout)");
      break;
    }
    if (warm && now >= warm_end) {
      warm = 0;
      measuring = 1;
      t_measure = now;
      scpu0 = server_cpu(opt_server_pid);
      ccpu0 = client_cpu_s();
      if (!opt_count) measure_end = now + (uint64_t)(opt_duration * 1e9);
    }
    if (measuring && (now >= measure_end || !issuing)) {
      if (!t_end) {
        t_end = now;
        scpu1 = server_cpu(opt_server_pid);
        ccpu1 = client_cpu_s();
        measuring = 0;
        issuing = 0;
      }
      break;
    }
    /* handshake mode: replace finished connections */
    if (opt_mode == MODE_HANDSHAKE && issuing) {
      for (int i = 0; i < opt_conns; i++)
        if (conns[i].state == S_FREE) conn_open(&conns[i], now);
    } else if (errors) {
      break; /* a persistent connection failed */
    }
    if (errors >= 100) break; /* the server is gone or refusing */
    int timeout_ms = 100;
    int n = epoll_wait(ep, events, MAX_EVENTS, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    now = now_ns();
    for (int i = 0; i < n; i++) {
      Conn *c = events[i].data.ptr;
      if (c->state == S_FREE) continue;
      conn_event(c, events[i].events, now);
      if (opt_mode == MODE_HANDSHAKE && c->state == S_FREE && issuing && errors < 100)
        conn_open(c, now);
    }
  }
  if (!t_end) {
    t_end = now_ns();
    if (!t_measure) t_measure = t_end;
    scpu1 = server_cpu(opt_server_pid);
    ccpu1 = client_cpu_s();
  }
  for (int i = 0; i < opt_conns; i++)
    if (conns[i].state != S_FREE) conn_close(&conns[i]);

  if (!errors && !timed_out && !stop_signal && ops == 0 && bytes == 0)
    errno = 0, fail(opt_mode == MODE_HANDSHAKE ? "stalled: no handshake completed in the measured window"
                                    : "stalled: nothing echoed in the measured window");
  double secs = (double)(t_end - t_measure) / 1e9;
  qsort(lat, lat_n, sizeof *lat, cmp_float);
  double suser = scpu1.user - scpu0.user, ssys = scpu1.sys - scpu0.sys;
  double scpu = (scpu0.ok && scpu1.ok) ? suser + ssys : -1;
  double mib = (double)bytes / 1048576.0;
  printf("{\"mode\": \"%s\", \"connections\": %d, \"size\": %zu, \"ops\": %llu, "
         "\"seconds\": %.6f, \"ops_s\": %.1f, \"bytes\": %llu, \"mib_s\": %.2f, "
         "\"p50_us\": %.1f, \"p99_us\": %.1f, \"errors\": %llu, \"first_error\": ",
         opt_mode == MODE_HANDSHAKE ? "handshake" : opt_mode == MODE_ECHO ? "echo" : "bulk",
         opt_conns, opt_size, (unsigned long long)ops, secs, secs > 0 ? (double)ops / secs : 0.0,
         (unsigned long long)bytes, secs > 0 ? mib / secs : 0.0, lat_pct(0.5), lat_pct(0.99),
         (unsigned long long)errors);
  if (first_error) {
    putchar('"');
    for (const char *p = first_error; *p; p++)
      if (*p == '"' || *p == '\\') printf("\\%c", *p);
      else if ((unsigned char)*p >= 0x20) putchar(*p);
    putchar('"');
  } else {
    printf("null");
  }
  printf(", \"timed_out\": %s, \"version\": \"%s\", \"cipher\": \"%s\", ",
         timed_out ? "true" : "false", neg_version, neg_cipher);
  if (scpu >= 0) {
    printf("\"server_cpu_s\": %.4f, \"server_user_s\": %.4f, \"server_sys_s\": %.4f, "
           "\"server_util\": %.3f, \"server_us_per_op\": %.3f, \"server_us_per_mib\": %.1f, "
           "\"server_user_us_per_mib\": %.1f, ",
           scpu, suser, ssys, secs > 0 ? scpu / secs : 0.0,
           ops ? scpu * 1e6 / (double)ops : 0.0, mib > 0 ? scpu * 1e6 / mib : 0.0,
           mib > 0 ? suser * 1e6 / mib : 0.0);
  } else {
    printf("\"server_cpu_s\": null, \"server_user_s\": null, \"server_sys_s\": null, "
           "\"server_util\": null, \"server_us_per_op\": null, \"server_us_per_mib\": null, "
           "\"server_user_us_per_mib\": null, ");
  }
  printf("\"client_cpu_s\": %.4f}\n", ccpu1 - ccpu0);
  fflush(stdout);
  SSL_CTX_free(ctx);
  return errors ? 1 : 0;
}
