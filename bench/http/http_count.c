/*
 * http_count: sends exactly N keep-alive GET requests and checks every response, for the
 * counted phase of bench/run_http.sh (system calls and instructions per request, measured as
 * the difference between two runs of different N, so the count must be exact: wrk runs for a
 * duration, and the requests it has in flight when it stops vary from run to run).
 *
 *   http_count --port P [--host 127.0.0.1] [--path /plaintext] [--connections C]
 *              [--requests N] [--depth D] [--body TEXT] [--timeout S]
 *
 * N requests are spread over C connections (the first N % C connections carry one more). Each
 * connection sends min(D, what it has left) requests in one write (D = 1: no pipelining), reads
 * until all their responses are complete, then sends the next batch; when its share is done
 * it closes. The request is what wrk sends: "GET PATH HTTP/1.1\r\nHost: HOST:PORT\r\n\r\n".
 * Every response must be "HTTP/1.x 200" with a Content-Length (no chunked bodies) and, when
 * --body is given (default "Hello, World!"; "" = any), exactly that body.
 *
 * Prints one JSON object: requests, connections, depth, seconds, rps, errors, first_error.
 * Exit status 0 when every request got a good response.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP (256 * 1024)

typedef struct {
  int fd;
  long left;     /* requests not yet sent */
  long awaiting; /* responses still due for the batch in flight */
  size_t in_len;
  char *in;
} Conn;

static const char *opt_host = "127.0.0.1", *opt_path = "/plaintext", *opt_body = "Hello, World!";
static int opt_port = 0, opt_conns = 10, opt_depth = 1;
static long opt_requests = 1000;
static double opt_timeout = 120;

static long errors = 0, done_requests = 0;
static char first_error[256] = "";

static void fail(const char *fmt, const char *detail) {
  if (errors++ > 0) return;
  snprintf(first_error, sizeof first_error, fmt, detail);
  for (char *p = first_error; *p; p++) /* it goes into a JSON string */
    if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '?';
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *batch;      /* opt_depth copies of the request */
static size_t req_len;

static int send_batch(Conn *c) {
  long k = c->left < opt_depth ? c->left : opt_depth;
  size_t len = (size_t)k * req_len, off = 0;
  while (off < len) { /* a few hundred bytes: the socket takes them at once */
    ssize_t w = write(c->fd, batch + off, len - off);
    if (w > 0)
      off += (size_t)w;
    else if (w < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    else
      return -1;
  }
  c->left -= k;
  c->awaiting = k;
  return 0;
}

/* Consumes complete responses from c->in. Returns -1 on a bad response. */
static int parse(Conn *c) {
  size_t used = 0;
  while (c->awaiting > 0) {
    char *start = c->in + used;
    size_t avail = c->in_len - used;
    char *end = memmem(start, avail, "\r\n\r\n", 4);
    if (!end) break;
    size_t head = (size_t)(end + 4 - start);
    if (head < 12 || memcmp(start, "HTTP/1.", 7) != 0 || memcmp(start + 8, " 200", 4) != 0) {
      char line[64];
      size_t n = 0;
      while (n < sizeof line - 1 && n < head && start[n] != '\r') {
        line[n] = start[n];
        n++;
      }
      line[n] = 0;
      fail("not a 200 response: %s", line);
      return -1;
    }
    long clen = -1;
    for (char *p = start; p < end;) {
      char *eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
      if (!eol) break;
      if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
        clen = strtol(p + 15, NULL, 10);
      if ((size_t)(eol - p) > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
        fail("%s", "a chunked response (not supported)");
        return -1;
      }
      p = eol + 2;
    }
    if (clen < 0) {
      fail("%s", "a response without Content-Length");
      return -1;
    }
    if (avail < head + (size_t)clen) break;
    if (*opt_body &&
        ((size_t)clen != strlen(opt_body) || memcmp(end + 4, opt_body, (size_t)clen) != 0)) {
      fail("%s", "a response with the wrong body");
      return -1;
    }
    used += head + (size_t)clen;
    c->awaiting--;
    done_requests++;
  }
  if (used) {
    c->in_len -= used;
    memmove(c->in, c->in + used, c->in_len);
  }
  if (c->awaiting == 0 && c->in_len > 0) {
    fail("%s", "bytes after the last response of a batch");
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
      {"path", required_argument, 0, 'P'},     {"connections", required_argument, 0, 'c'},
      {"requests", required_argument, 0, 'n'}, {"depth", required_argument, 0, 'd'},
      {"body", required_argument, 0, 'b'},     {"timeout", required_argument, 0, 't'},
      {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
      case 'h': opt_host = optarg; break;
      case 'p': opt_port = atoi(optarg); break;
      case 'P': opt_path = optarg; break;
      case 'c': opt_conns = atoi(optarg); break;
      case 'n': opt_requests = atol(optarg); break;
      case 'd': opt_depth = atoi(optarg); break;
      case 'b': opt_body = optarg; break;
      case 't': opt_timeout = atof(optarg); break;
      default:
        fprintf(stderr,
                "usage: %s --port P [--host H] [--path /plaintext] [--connections C] "
                "[--requests N] [--depth D] [--body TEXT] [--timeout S]\n",
                argv[0]);
        return 2;
    }
  }
  if (opt_port <= 0 || opt_conns < 1 || opt_depth < 1 || opt_requests < 1) {
    fprintf(stderr, "need --port, and positive --connections, --depth, --requests\n");
    return 2;
  }
  if (opt_conns > opt_requests) opt_conns = (int)opt_requests;

  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", opt_path, opt_host,
                   opt_port);
  req_len = (size_t)n;
  batch = malloc(req_len * (size_t)opt_depth);
  for (int i = 0; i < opt_depth; i++) memcpy(batch + (size_t)i * req_len, req, req_len);

  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)opt_port)};
  if (inet_pton(AF_INET, opt_host, &addr.sin_addr) != 1) {
    fprintf(stderr, "bad host: %s\n", opt_host);
    return 2;
  }
  int ep = epoll_create1(0);
  Conn *conns = calloc((size_t)opt_conns, sizeof *conns);
  double t0 = now();
  int open_conns = 0;
  for (int i = 0; i < opt_conns; i++) {
    Conn *c = &conns[i];
    c->left = opt_requests / opt_conns + (i < opt_requests % opt_conns ? 1 : 0);
    c->in = malloc(IN_CAP);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
      fail("connect: %s", strerror(errno));
      break;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    open_conns++;
  }
  if (errors == 0)
    for (int i = 0; i < opt_conns; i++)
      if (send_batch(&conns[i]) < 0) fail("write: %s", strerror(errno));

  struct epoll_event events[256];
  double deadline = t0 + opt_timeout;
  while (errors == 0 && open_conns > 0) {
    int left_ms = (int)((deadline - now()) * 1000);
    if (left_ms <= 0) {
      fail("%s", "timed out");
      break;
    }
    int k = epoll_wait(ep, events, 256, left_ms < 1000 ? left_ms : 1000);
    if (k < 0 && errno != EINTR) {
      fail("epoll_wait: %s", strerror(errno));
      break;
    }
    for (int i = 0; i < k && errors == 0; i++) {
      Conn *c = events[i].data.ptr;
      if (c->fd < 0) continue;
      ssize_t r = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) {
        fail("%s", r == 0 ? "the server closed a connection early" : strerror(errno));
        break;
      }
      c->in_len += (size_t)r;
      if (parse(c) < 0) break;
      if (c->awaiting == 0) {
        if (c->left > 0) {
          if (send_batch(c) < 0) fail("write: %s", strerror(errno));
        } else {
          close(c->fd);
          c->fd = -1;
          open_conns--;
        }
      } else if (c->in_len == IN_CAP) {
        fail("%s", "a response larger than the read buffer");
      }
    }
  }
  double secs = now() - t0;
  printf("{\"requests\": %ld, \"connections\": %d, \"depth\": %d, \"seconds\": %.6f, "
         "\"rps\": %.1f, \"errors\": %ld, \"first_error\": \"%s\"}\n",
         done_requests, opt_conns, opt_depth, secs, secs > 0 ? (double)done_requests / secs : 0.0,
         errors, first_error);
  for (int i = 0; i < opt_conns; i++)
    if (conns[i].fd > 0) close(conns[i].fd);
  return errors == 0 && done_requests == opt_requests ? 0 : 1;
}
