/*
 * c_epoll_echo: the floor. A minimal hand-written TCP echo server: one thread, level-triggered
 * epoll, one shared read buffer, each read written straight back. What a write leaves over is
 * kept per connection and flushed on EPOLLOUT; reading from that connection pauses meanwhile
 * (back-pressure), so memory stays bounded.
 *
 *   c_epoll_echo [--host 127.0.0.1] [--port P]   (0 = ephemeral)
 *
 * Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM: exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)

typedef struct {
  int fd;
  char *pending; /* unwritten tail of the last read, or NULL */
  size_t pending_len, pending_off;
} Conn;

static volatile sig_atomic_t stop = 0;
static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int ep;

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
      break;
    } else {
      return -1;
    }
  }
  if (off == len) return 0;
  c->pending_len = len - off;
  c->pending_off = 0;
  c->pending = malloc(c->pending_len);
  if (!c->pending) return -1;
  memcpy(c->pending, data + off, c->pending_len);
  set_events(c, EPOLLOUT); /* stop reading until the tail is out */
  return 0;
}

static int flush_pending(Conn *c) {
  while (c->pending_off < c->pending_len) {
    ssize_t w = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
    if (w > 0) {
      c->pending_off += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      return 0;
    } else {
      return -1;
    }
  }
  free(c->pending);
  c->pending = NULL;
  set_events(c, EPOLLIN);
  return 0;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else {
      fprintf(stderr, "usage: c_epoll_echo [--host H] [--port P]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa_sig;
  memset(&sa_sig, 0, sizeof sa_sig);
  sa_sig.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
  sigaction(SIGINT, &sa_sig, NULL);
  sigaction(SIGTERM, &sa_sig, NULL);

  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "c_epoll_echo: bad IPv4 address %s\n", host);
    return 1;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
    fprintf(stderr, "c_epoll_echo: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
    return 1;
  }
  socklen_t slen = sizeof sa;
  getsockname(lfd, (struct sockaddr *)&sa, &slen);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  printf("listening on %s:%d\n", host, ntohs(sa.sin_port));
  fflush(stdout);

  static char buf[BUF_SIZE];
  struct epoll_event events[256];
  while (!stop) {
    int n = epoll_wait(ep, events, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      Conn *c = events[i].data.ptr;
      if (c == NULL) { /* the listening socket */
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break; /* EAGAIN, or an error to retry on the next readiness */
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          Conn *nc = calloc(1, sizeof *nc);
          if (!nc) {
            close(fd);
            continue;
          }
          nc->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        continue;
      }
      if (c->pending) {
        if ((events[i].events & (EPOLLERR | EPOLLHUP)) || flush_pending(c) < 0) close_conn(c);
        continue;
      }
      ssize_t r = read(c->fd, buf, sizeof buf);
      if (r > 0) {
        if (send_or_keep(c, buf, (size_t)r) < 0) close_conn(c);
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        close_conn(c);
      }
    }
  }
  close(lfd);
  return 0;
}
