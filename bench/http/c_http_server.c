/*
 * c_http_server: the floor for bench/run_http.sh. A minimal hand-written HTTP/1.1 responder:
 * one thread, level-triggered epoll, keep-alive, no parser beyond finding the end of each
 * request's header section ("\r\n\r\n"). Every complete request that a read brought in is
 * answered into one shared output buffer, and that buffer goes out in ONE write: a batch of
 * pipelined requests costs one read and one write.
 *
 *   c_http_server [--host 127.0.0.1] [--port P]   (0 = ephemeral)
 *
 *   GET /plaintext   -> 200 text/plain "Hello, World!"
 *   GET (other path) -> 404 text/plain "Not Found"
 *   anything else    -> 400, then the connection is closed
 *
 * Requests are expected to carry no body (GET only); "Connection: close" is not looked at
 * (the client closes). The Date header is formatted at most once per second: the wall clock is
 * read (CLOCK_REALTIME_COARSE, no system call through the vDSO) once per epoll_wait return and
 * the header rewritten in place when the second has changed. A write that the socket does not
 * take whole is kept per connection and flushed on EPOLLOUT; reading from that connection
 * pauses meanwhile, so memory stays bounded.
 *
 * Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM (read from a signalfd in the
 * epoll set, so none is missed): exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP (16 * 1024)   /* per connection: a header section larger than this is refused */
#define OUT_CAP (256 * 1024) /* shared: the responses to one read's requests */
#define MAX_EVENTS 256

typedef struct {
  int fd;
  size_t in_len;  /* bytes of an incomplete request kept in `in` */
  size_t scanned; /* how far `in` has been searched for the terminator */
  char *pending;  /* what a write left over, or NULL */
  size_t pending_len, pending_off;
  int close_after; /* close once `pending` is flushed */
  char in[IN_CAP];
} Conn;

/* The responses, with their Date value at a fixed offset (29 characters, RFC 7231 IMF-fixdate). */
#define DATE_LEN 29
#define PRE "HTTP/1.1 "
#define MID "\r\nServer: c_floor\r\nDate: "
typedef struct {
  char text[256];
  size_t len, date_off;
} Response;

static Response ok_resp, not_found_resp, bad_resp;
static time_t date_second = -1;

static void make_response(Response *r, const char *status, const char *extra, const char *body) {
  char date[DATE_LEN + 1];
  memset(date, 'x', DATE_LEN);
  date[DATE_LEN] = 0;
  int n = snprintf(r->text, sizeof r->text,
                   PRE "%s" MID "%s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                   status, date, strlen(body), extra, body);
  r->len = (size_t)n;
  r->date_off = strlen(PRE) + strlen(status) + strlen(MID);
}

static void refresh_date(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec == date_second) return;
  date_second = ts.tv_sec;
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char date[DATE_LEN + 1];
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  Response *all[] = {&ok_resp, &not_found_resp, &bad_resp};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    memcpy(all[i]->text + all[i]->date_off, date, DATE_LEN);
}

static int ep;
static char out[OUT_CAP];

static void close_conn(Conn *c) {
  close(c->fd); /* also removes it from the epoll set */
  free(c->pending);
  free(c);
}

static void set_events(Conn *c, unsigned events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes data[0, len); keeps what the socket did not take. Returns -1 on error. */
static int send_or_keep(Conn *c, const char *data, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(c->fd, data + off, len - off);
    if (w > 0) {
      off += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      c->pending_len = len - off;
      c->pending_off = 0;
      c->pending = malloc(c->pending_len);
      if (!c->pending) return -1;
      memcpy(c->pending, data + off, c->pending_len);
      set_events(c, EPOLLOUT);
      return 0;
    } else {
      return -1;
    }
  }
  return 0;
}

static void process(Conn *c);

static void on_writable(Conn *c) {
  while (c->pending_off < c->pending_len) {
    ssize_t w = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
    if (w > 0) {
      c->pending_off += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      return;
    } else {
      close_conn(c);
      return;
    }
  }
  free(c->pending);
  c->pending = NULL;
  if (c->close_after) {
    close_conn(c);
    return;
  }
  set_events(c, EPOLLIN | EPOLLRDHUP);
  if (c->in_len > c->scanned) process(c); /* requests that waited for the socket to drain */
}

/* The first "\r\n\r\n" in p[from, len), or NULL (memchr for the '\r': glibc's memmem sets
 * up a shift table on every call, which costs more than the search on requests this small). */
static const char *find_terminator(const char *p, size_t from, size_t len) {
  const char *q = p + from, *end = p + len;
  while (end - q >= 4) {
    const char *r = memchr(q, '\r', (size_t)(end - q - 3));
    if (!r) return NULL;
    if (r[1] == '\n' && r[2] == '\r' && r[3] == '\n') return r;
    q = r + 1;
  }
  return NULL;
}

/* Answers every complete request in c->in into `out`; keeps an incomplete one. Returns the
 * number of bytes of responses, or -1 if the connection is to be closed after them (a bad
 * request: *len_out still holds the bytes to send). */
static int answer(Conn *c, size_t *len_out) {
  size_t used = 0, olen = 0;
  int bad = 0;
  for (;;) {
    size_t from = c->scanned > used + 3 ? c->scanned - 3 : used;
    const char *end = find_terminator(c->in, from, c->in_len);
    if (!end) {
      c->scanned = c->in_len;
      break;
    }
    const char *req = c->in + used;
    size_t req_len = (size_t)(end + 4 - req);
    const Response *r;
    if (req_len >= 14 && memcmp(req, "GET /plaintext", 14) == 0 &&
        (req[14] == ' ' || req[14] == '?'))
      r = &ok_resp;
    else if (req_len >= 4 && memcmp(req, "GET ", 4) == 0)
      r = &not_found_resp;
    else {
      r = &bad_resp;
      bad = 1;
    }
    if (olen + r->len > OUT_CAP) { /* a very deep pipeline: flush what is there first */
      if (send_or_keep(c, out, olen) < 0) return -2;
      olen = 0;
      if (c->pending) { /* the socket is full: answer the rest once it drains */
        c->scanned = used;
        break;
      }
    }
    memcpy(out + olen, r->text, r->len);
    olen += r->len;
    used += req_len;
    c->scanned = used;
    if (bad) break;
  }
  if (used > 0) {
    c->in_len -= used;
    if (c->in_len > 0) memmove(c->in, c->in + used, c->in_len);
    c->scanned -= used;
  }
  *len_out = olen;
  return bad ? -1 : 0;
}

/* Answers what c->in holds and writes the answers in one write. */
static void process(Conn *c) {
  size_t olen = 0;
  int rc = answer(c, &olen);
  if (rc == -2) {
    close_conn(c);
    return;
  }
  if (olen > 0 && send_or_keep(c, out, olen) < 0) {
    close_conn(c);
    return;
  }
  if (rc == -1) {
    if (c->pending) {
      c->close_after = 1;
    } else {
      close_conn(c);
    }
  }
}

static void on_readable(Conn *c) {
  if (c->in_len == IN_CAP) { /* header section too large */
    close_conn(c);
    return;
  }
  ssize_t n = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    close_conn(c);
    return;
  }
  c->in_len += (size_t)n;
  process(c);
}

static void on_accept(int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or a transient error: the next event retries */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn *c = malloc(sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->fd = fd;
    c->in_len = c->scanned = 0;
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    c->close_after = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
      close(fd);
      free(c);
    }
  }
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 0;
  static const struct option opts[] = {
      {"host", required_argument, 0, 'h'}, {"port", required_argument, 0, 'p'}, {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
      case 'h': host = optarg; break;
      case 'p': port = atoi(optarg); break;
      default:
        fprintf(stderr, "usage: %s [--host 127.0.0.1] [--port P]\n", argv[0]);
        return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  /* SIGINT and SIGTERM arrive through a signalfd in the epoll set: a flag set by a handler
   * can be set just before epoll_wait blocks (a window that valgrind widens) and be missed. */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop_signals, NULL);
  int sfd = signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);

  make_response(&ok_resp, "200 OK", "", "Hello, World!");
  make_response(&not_found_resp, "404 Not Found", "", "Not Found");
  make_response(&bad_resp, "400 Bad Request", "Connection: close\r\n", "Bad Request");
  refresh_date();

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "bad host: %s\n", host);
    return 1;
  }
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
    perror("bind/listen");
    return 1;
  }
  socklen_t alen = sizeof addr;
  getsockname(lfd, (struct sockaddr *)&addr, &alen);

  ep = epoll_create1(EPOLL_CLOEXEC);
  static int listener_tag, signal_tag; /* data.ptr of the listening socket, the signalfd */
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &signal_tag};
  if (sfd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &sev) < 0) {
    perror("signalfd");
    return 1;
  }

  printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
  fflush(stdout);

  struct epoll_event events[MAX_EVENTS];
  int stop = 0;
  while (!stop) {
    int n = epoll_wait(ep, events, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("epoll_wait");
      return 1;
    }
    refresh_date();
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == &listener_tag) {
        on_accept(lfd);
        continue;
      }
      if (events[i].data.ptr == &signal_tag) {
        stop = 1;
        continue;
      }
      Conn *c = events[i].data.ptr;
      if (c->pending) {
        if (events[i].events & (EPOLLERR | EPOLLHUP))
          close_conn(c);
        else
          on_writable(c);
      } else {
        on_readable(c); /* EPOLLRDHUP / EPOLLHUP: the read returns 0 or an error */
      }
    }
  }
  close(lfd);
  close(sfd);
  close(ep);
  return 0;
}
