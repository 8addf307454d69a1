/*
 * echo_load: a single-threaded epoll load generator for echo servers.
 *
 *   echo_load --port P [--host 127.0.0.1] [--connections N] [--size BYTES]
 *             [--mode pingpong|stream] [--duration S | --requests N] [--warmup S]
 *             [--window BYTES] [--server-pid PID] [--timeout S]
 *   echo_load --port P --idle N
 *
 * pingpong: every connection sends one message of SIZE bytes, waits for the whole echo,
 *   verifies every byte, records the round-trip latency, and sends the next message.
 * stream: every connection writes SIZE-byte chunks and reads continuously, keeping at most
 *   WINDOW bytes unechoed (default max(4 * SIZE, 64 KiB)); every echoed byte is verified.
 * idle: opens N connections that send nothing, prints "ready", and holds them until
 *   standard input closes or SIGINT/SIGTERM arrives.
 *
 * The byte at offset k of connection c's stream is pattern[(k + c * 4099) % PERIOD]
 * (PERIOD is prime, the pattern pseudo-random), so a byte that is lost, duplicated,
 * reordered, or crosses connections fails verification (a memcmp against the pattern).
 *
 * The run is: connect all, a warm-up of --warmup seconds (not counted), then the measured
 * window: --duration seconds, or until exactly --requests requests have completed (no request
 * is issued beyond that count, so the server sees exactly warm-up + N requests). With
 * --server-pid, the server's CPU time (utime + stime of /proc/PID/stat, and the sum of
 * /proc/PID/task/<tid>/schedstat run times) is sampled at the start and end of the window.
 *
 * Prints one JSON object on stdout. Exit status 0 when errors == 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
#define RECV_BUF (256 * 1024)

/* Log-linear latency histogram over nanoseconds: values below 2^SUB_BITS exact, above that
 * SUB_BITS significant bits (under 1% relative error). */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define HALF (SUB / 2)
#define NBUCKETS ((int)(SUB + 58 * HALF))

static uint64_t hist[NBUCKETS];
static uint64_t hist_count;

static int bucket_of(uint64_t v) {
  if (v < SUB) return (int)v;
  int msb = 63 - __builtin_clzll(v);     /* >= SUB_BITS */
  int shift = msb - (SUB_BITS - 1);       /* keep SUB_BITS top bits: HALF .. SUB-1 */
  int idx = (int)SUB + (shift - 1) * (int)HALF + (int)((v >> shift) - HALF);
  return idx < NBUCKETS ? idx : NBUCKETS - 1;
}

static double bucket_mid(int idx) {
  if (idx < (int)SUB) return idx;
  int shift = (idx - (int)SUB) / (int)HALF + 1;
  uint64_t m = (uint64_t)((idx - (int)SUB) % (int)HALF) + HALF;
  double lo = (double)(m << shift);
  return lo + (double)(1ull << shift) / 2.0;
}

static double percentile_ns(double p) {
  if (hist_count == 0) return 0;
  uint64_t rank = (uint64_t)(p * (double)hist_count);
  if (rank >= hist_count) rank = hist_count - 1;
  uint64_t seen = 0;
  for (int i = 0; i < NBUCKETS; i++) {
    seen += hist[i];
    if (seen > rank) return bucket_mid(i);
  }
  return bucket_mid(NBUCKETS - 1);
}

static uint8_t *pattern; /* PERIOD + max_io bytes: the period, then its start again */
static size_t max_io;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "echo_load: %s: %s\n", what, strerror(errno));
  exit(2);
}

typedef struct {
  int fd;
  unsigned index;
  uint64_t sent;      /* stream bytes written */
  uint64_t received;  /* stream bytes read and verified */
  uint64_t target;    /* pingpong: end offset of the current message */
  uint64_t t_start;   /* pingpong: send time of the current message */
  int active;         /* pingpong: a message is in flight */
  int want_out;       /* EPOLLOUT armed */
} Conn;

static const uint8_t *stream_at(const Conn *c, uint64_t off) {
  return pattern + (off + (uint64_t)c->index * CONN_STRIDE) % PERIOD;
}

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static int opt_conns = 10;
static size_t opt_size = 64;
static int opt_stream = 0;
static double opt_duration = 2.0;
static uint64_t opt_requests = 0;
static double opt_warmup = 0.5;
static size_t opt_window = 0;
static int opt_server_pid = 0;
static int opt_idle = 0;
static double opt_timeout = 120.0;

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

static int connect_one(const struct sockaddr_in *sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  for (int attempt = 0;; attempt++) {
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0) break;
    if ((errno == EINTR || errno == EAGAIN) && attempt < 100) continue;
    die("connect");
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Closes with a reset so that no TIME_WAIT state is left behind (many runs, many sockets). */
static void close_reset(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

typedef struct {
  double stat_s;   /* utime + stime from /proc/PID/stat, seconds */
  double sched_s;  /* sum of /proc/PID/task/TID/schedstat run times, seconds */
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
  /* after ")": field 3 (state) ... utime is field 14, stime field 15 */
  unsigned long long ut = 0, st = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return r;
  double hz = (double)sysconf(_SC_CLK_TCK);
  r.stat_s = (double)(ut + st) / hz;
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char sp[320];
      snprintf(sp, sizeof sp, "/proc/%d/task/%s/schedstat", pid, e->d_name);
      FILE *g = fopen(sp, "r");
      if (!g) continue;
      unsigned long long run = 0;
      if (fscanf(g, "%llu", &run) == 1) r.sched_s += (double)run / 1e9;
      fclose(g);
    }
    closedir(d);
  }
  r.ok = 1;
  return r;
}

static double client_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static void usage(void) {
  fprintf(stderr,
          "usage: echo_load --port P [--host H] [--connections N] [--size BYTES]\n"
          "                 [--mode pingpong|stream] [--duration S | --requests N]\n"
          "                 [--warmup S] [--window BYTES] [--server-pid PID] [--timeout S]\n"
          "       echo_load --port P --idle N\n");
  exit(2);
}

static void parse(int argc, char **argv) {
  static const struct option longopts[] = {
      {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
      {"connections", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
      {"mode", required_argument, 0, 'm'},     {"duration", required_argument, 0, 'd'},
      {"requests", required_argument, 0, 'n'}, {"warmup", required_argument, 0, 'w'},
      {"window", required_argument, 0, 'W'},   {"server-pid", required_argument, 0, 'P'},
      {"idle", required_argument, 0, 'i'},     {"timeout", required_argument, 0, 't'},
      {"help", no_argument, 0, '?'},           {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, 0)) != -1) {
    switch (ch) {
      case 'h': opt_host = optarg; break;
      case 'p': opt_port = atoi(optarg); break;
      case 'c': opt_conns = atoi(optarg); break;
      case 's': opt_size = (size_t)strtoull(optarg, 0, 10); break;
      case 'm':
        if (strcmp(optarg, "pingpong") == 0) opt_stream = 0;
        else if (strcmp(optarg, "stream") == 0) opt_stream = 1;
        else usage();
        break;
      case 'd': opt_duration = atof(optarg); break;
      case 'n': opt_requests = strtoull(optarg, 0, 10); break;
      case 'w': opt_warmup = atof(optarg); break;
      case 'W': opt_window = (size_t)strtoull(optarg, 0, 10); break;
      case 'P': opt_server_pid = atoi(optarg); break;
      case 'i': opt_idle = atoi(optarg); break;
      case 't': opt_timeout = atof(optarg); break;
      default: usage();
    }
  }
  if (optind != argc || opt_port <= 0 || opt_port > 65535 || opt_conns <= 0 || opt_size == 0 ||
      opt_size > (1u << 24))
    usage();
  if (opt_window == 0) opt_window = opt_size * 4 > 65536 ? opt_size * 4 : 65536;
  if (opt_window < opt_size) opt_window = opt_size;
}

static int run_idle(const struct sockaddr_in *sa) {
  int *fds = calloc((size_t)opt_idle, sizeof *fds);
  if (!fds) die("calloc");
  for (int i = 0; i < opt_idle; i++) fds[i] = connect_one(sa);
  printf("ready %d\n", opt_idle);
  fflush(stdout);
  uint64_t deadline = now_ns() + (uint64_t)(opt_timeout * 1e9);
  while (!stop_signal && now_ns() < deadline) {
    struct pollfd p = {0, POLLIN, 0};
    int r = poll(&p, 1, 200);
    if (r > 0) {
      char b[64];
      ssize_t n = read(0, b, sizeof b);
      if (n <= 0) break; /* stdin closed */
    }
  }
  for (int i = 0; i < opt_idle; i++) close_reset(fds[i]);
  free(fds);
  return 0;
}

int main(int argc, char **argv) {
  parse(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa_sig;
  memset(&sa_sig, 0, sizeof sa_sig);
  sa_sig.sa_handler = on_signal;
  sigaction(SIGINT, &sa_sig, 0);
  sigaction(SIGTERM, &sa_sig, 0);

  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)opt_port);
  if (inet_pton(AF_INET, opt_host, &sa.sin_addr) != 1) {
    fprintf(stderr, "echo_load: bad IPv4 address %s\n", opt_host);
    return 2;
  }
  if (opt_idle > 0) return run_idle(&sa);

  max_io = opt_size; /* largest single write or verified read */
  if (max_io < RECV_BUF) max_io = RECV_BUF;
  pattern = malloc(PERIOD + max_io);
  uint8_t *rbuf = malloc(RECV_BUF);
  if (!pattern || !rbuf) die("malloc");
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < PERIOD; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    pattern[i] = (uint8_t)(x >> 24);
  }
  for (size_t i = 0; i < max_io; i++) pattern[PERIOD + i] = pattern[i % PERIOD];

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  Conn *conns = calloc((size_t)opt_conns, sizeof *conns);
  if (!conns) die("calloc");
  for (int i = 0; i < opt_conns; i++) {
    conns[i].fd = connect_one(&sa);
    conns[i].index = (unsigned)i;
    fcntl(conns[i].fd, F_SETFL, fcntl(conns[i].fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
  }

  enum { WARMUP, MEASURE, DRAIN, DONE } phase = opt_warmup > 0 ? WARMUP : MEASURE;
  uint64_t t0 = now_ns();
  uint64_t hard_deadline = t0 + (uint64_t)(opt_timeout * 1e9);
  uint64_t warm_end = t0 + (uint64_t)(opt_warmup * 1e9);
  uint64_t t_measure = phase == MEASURE ? t0 : 0, t_end = 0, measure_end = 0;
  if (phase == MEASURE && opt_requests == 0) measure_end = t0 + (uint64_t)(opt_duration * 1e9);
  Cpu cpu0 = phase == MEASURE ? server_cpu(opt_server_pid) : (Cpu){0, 0, 0};
  double ccpu0 = phase == MEASURE ? client_cpu_s() : 0;
  uint64_t requests = 0, issued = 0, bytes = 0, errors = 0;
  uint64_t bytes_at_measure = 0;
  int in_flight = 0;
  const char *first_error = 0;

#define FAIL(c, msg)                                                   \
  do {                                                                 \
    errors++;                                                          \
    if (!first_error) first_error = (msg);                             \
    epoll_ctl(ep, EPOLL_CTL_DEL, (c)->fd, 0);                          \
    close((c)->fd);                                                    \
    (c)->fd = -1;                                                      \
    live--;                                                            \
    if ((c)->active) { (c)->active = 0; in_flight--; }                 \
  } while (0)

  /* Writes what the connection owes: pingpong up to target, stream up to the window. */
  int may_issue = 1;
  int live = opt_conns;

#define PUMP_WRITE(c)                                                                   \
  do {                                                                                  \
    uint64_t limit = opt_stream ? (c)->received + opt_window : (c)->target;             \
    while ((c)->fd >= 0 && (c)->sent < limit) {                                         \
      size_t n = (size_t)(limit - (c)->sent);                                           \
      if (n > max_io) n = max_io;                                                       \
      if (opt_stream && n > opt_size) n = opt_size;                                     \
      ssize_t w = write((c)->fd, stream_at((c), (c)->sent), n);                         \
      if (w > 0) { (c)->sent += (uint64_t)w; continue; }                                \
      if (w < 0 && errno == EINTR) continue;                                            \
      if (w < 0 && errno == EAGAIN) break;                                              \
      FAIL((c), "write failed");                                                        \
    }                                                                                   \
    if ((c)->fd >= 0) {                                                                 \
      int want = (c)->sent < limit;                                                     \
      if (want != (c)->want_out) {                                                      \
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),             \
                                 .data.ptr = (c)};                                      \
        epoll_ctl(ep, EPOLL_CTL_MOD, (c)->fd, &ev);                                     \
        (c)->want_out = want;                                                           \
      }                                                                                 \
    }                                                                                   \
  } while (0)

  uint64_t now = now_ns();
  /* Start: one message per connection (pingpong) or fill the windows (stream). */
  for (int i = 0; i < opt_conns; i++) {
    Conn *c = &conns[i];
    if (opt_stream) {
      PUMP_WRITE(c);
    } else if (opt_requests == 0 || phase == WARMUP || issued < opt_requests) {
      c->target = c->sent + opt_size;
      c->t_start = now;
      c->active = 1;
      in_flight++;
      issued++;
      PUMP_WRITE(c);
    }
  }

  struct epoll_event events[MAX_EVENTS];
  while (phase != DONE) {
    if (stop_signal) { first_error = first_error ? first_error : "interrupted"; errors++; break; }
    if (!live || (phase != WARMUP && !opt_stream && in_flight == 0 && !may_issue)) break;
    int nev = epoll_wait(ep, events, MAX_EVENTS, 100);
    if (nev < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    now = now_ns();
    if (now > hard_deadline) {
      errors++;
      first_error = "timed out";
      break;
    }
    /* phase changes happen between batches */
    if (phase == WARMUP && now >= warm_end) {
      phase = MEASURE;
      t_measure = now;
      cpu0 = server_cpu(opt_server_pid);
      ccpu0 = client_cpu_s();
      if (opt_requests == 0) measure_end = now + (uint64_t)(opt_duration * 1e9);
      issued = in_flight; /* the in-flight messages complete inside the window */
      requests = 0;
      bytes_at_measure = bytes;
      memset(hist, 0, sizeof hist);
      hist_count = 0;
    }
    if (phase == MEASURE && opt_requests == 0 && now >= measure_end) {
      phase = DRAIN;
      t_end = now;
      may_issue = 0;
    }
    for (int e = 0; e < nev; e++) {
      Conn *c = events[e].data.ptr;
      if (c->fd < 0) continue;
      uint32_t evs = events[e].events;
      if (evs & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (;;) {
          size_t want = RECV_BUF;
          ssize_t r = read(c->fd, rbuf, want);
          if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) FAIL(c, "read failed");
            break;
          }
          if (r == 0) {
            FAIL(c, "server closed the connection");
            break;
          }
          if (c->received + (uint64_t)r > c->sent) {
            FAIL(c, "received more bytes than were sent");
            break;
          }
          if (memcmp(rbuf, stream_at(c, c->received), (size_t)r) != 0) {
            FAIL(c, "echoed bytes differ from those sent");
            break;
          }
          c->received += (uint64_t)r;
          bytes += (uint64_t)r;
          if (!opt_stream && c->received == c->target) {
            /* message complete */
            uint64_t lat = now_ns();
            if (phase == MEASURE) {
              hist[bucket_of(lat - c->t_start)]++;
              hist_count++;
              requests++;
            }
            c->active = 0;
            in_flight--;
            if (phase == MEASURE && opt_requests && requests >= opt_requests) {
              phase = DRAIN;
              t_end = lat;
              may_issue = 0;
            }
            int issue = may_issue && phase != DRAIN &&
                        (opt_requests == 0 || phase == WARMUP || issued < opt_requests);
            if (issue) {
              c->target = c->sent + opt_size;
              c->t_start = lat;
              c->active = 1;
              in_flight++;
              issued++;
              PUMP_WRITE(c);
            }
          }
          if (c->fd < 0 || (size_t)r < want) break; /* drained: level-triggered epoll reports the rest */
        }
        if (c->fd < 0) continue;
        if (opt_stream && may_issue) PUMP_WRITE(c);
      }
      if (c->fd >= 0 && (evs & EPOLLOUT)) PUMP_WRITE(c);
    }
    if (phase == DRAIN) {
      if (!opt_stream) {
        if (in_flight == 0) phase = DONE;
        /* pingpong with --duration: in-flight messages finish, their time is not counted */
        if (opt_requests == 0) phase = DONE;
      } else {
        phase = DONE;
      }
    }
  }
  if (t_end == 0) t_end = now_ns();
  Cpu cpu1 = server_cpu(opt_server_pid);
  double ccpu1 = client_cpu_s();
  if (t_measure == 0) t_measure = t_end;
  double seconds = (double)(t_end - t_measure) / 1e9;
  uint64_t mbytes = bytes - bytes_at_measure;
  if (opt_stream) requests = mbytes / opt_size;

  printf("{\"mode\": \"%s\", \"connections\": %d, \"size\": %zu", opt_stream ? "stream" : "pingpong",
         opt_conns, opt_size);
  printf(", \"requests\": %llu, \"seconds\": %.6f, \"rps\": %.1f", (unsigned long long)requests,
         seconds, seconds > 0 ? (double)requests / seconds : 0.0);
  printf(", \"bytes\": %llu, \"mib_s\": %.2f", (unsigned long long)mbytes,
         seconds > 0 ? (double)mbytes / seconds / 1048576.0 : 0.0);
  if (!opt_stream)
    printf(", \"p50_us\": %.2f, \"p99_us\": %.2f, \"p999_us\": %.2f", percentile_ns(0.50) / 1e3,
           percentile_ns(0.99) / 1e3, percentile_ns(0.999) / 1e3);
  if (opt_stream) printf(", \"window\": %zu", opt_window);
  printf(", \"errors\": %llu", (unsigned long long)errors);
  if (first_error) printf(", \"first_error\": \"%s\"", first_error);
  if (opt_server_pid > 0 && cpu0.ok && cpu1.ok)
    printf(", \"server_cpu_s\": %.4f, \"server_sched_s\": %.6f", cpu1.stat_s - cpu0.stat_s,
           cpu1.sched_s - cpu0.sched_s);
  printf(", \"client_cpu_s\": %.4f}\n", ccpu1 - ccpu0);
  fflush(stdout);
  for (int i = 0; i < opt_conns; i++)
    if (conns[i].fd >= 0) close_reset(conns[i].fd);
  return errors ? 1 : 0;
}
