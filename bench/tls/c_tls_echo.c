/*
 * c_tls_echo: the floor for TLS. A minimal hand-written TLS echo server on OpenSSL: one
 * thread, level-triggered epoll, non-blocking sockets with OpenSSL's socket BIO (read-ahead
 * on, so a read() takes whatever the kernel has, not one record header at a time), one shared
 * 16 KiB read buffer (one TLS record's worth of plaintext), each read written straight back.
 * What a write leaves over is kept per connection and retried on EPOLLOUT; reading from that
 * connection pauses meanwhile (back-pressure). A close_notify from the client is answered with
 * one and the connection closed.
 *
 *   c_tls_echo --cert FILE --key FILE [--host 127.0.0.1] [--port P]   (0 = ephemeral)
 *
 * The context has OpenSSL's server defaults (TLS 1.2 and 1.3, its default cipher suites and
 * groups, two TLS 1.3 session tickets per connection, an internal session cache); the client
 * pins what is negotiated. Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM:
 * exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (16 * 1024)

typedef struct {
  int fd;
  SSL *ssl;
  int handshaken;
  char *pending; /* plaintext SSL_write has not taken yet (retried with the same length) */
  size_t pending_len;
  unsigned events;
} Conn;

static volatile sig_atomic_t stop = 0;
static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int ep;

static void close_conn(Conn *c) {
  SSL_free(c->ssl);
  close(c->fd); /* also removes it from the epoll set */
  free(c->pending);
  free(c);
  ERR_clear_error();
}

static void set_events(Conn *c, unsigned events) {
  if (c->events == events) return;
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->events = events;
}

/* 0: go on; 1: wait (events set); -1: close */
static int after_error(Conn *c, int r) {
  switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
      set_events(c, EPOLLIN);
      return 1;
    case SSL_ERROR_WANT_WRITE:
      set_events(c, EPOLLOUT);
      return 1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify: answer it */
      SSL_shutdown(c->ssl);
      return -1;
    default:
      return -1;
  }
}

/* Writes the pending plaintext. 0: all written; 1: wait; -1: close. */
static int flush_pending(Conn *c) {
  while (c->pending) {
    ERR_clear_error();
    int w = SSL_write(c->ssl, c->pending, (int)c->pending_len);
    if (w > 0) {
      free(c->pending);
      c->pending = NULL;
      break;
    }
    return after_error(c, w);
  }
  return 0;
}

/* Reads and echoes until OpenSSL wants the socket. */
static int serve(Conn *c) {
  static char buf[BUF_SIZE];
  if (!c->handshaken) {
    ERR_clear_error();
    int r = SSL_accept(c->ssl);
    if (r != 1) return after_error(c, r);
    c->handshaken = 1;
  }
  if (c->pending) {
    int r = flush_pending(c);
    if (r != 0) return r;
  }
  for (;;) {
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, sizeof buf);
    if (n <= 0) return after_error(c, n);
    ERR_clear_error();
    int w = SSL_write(c->ssl, buf, n);
    if (w > 0) continue;
    int r = after_error(c, w);
    if (r < 0) return r;
    /* SSL_write must be retried with the same bytes: keep them */
    c->pending = malloc((size_t)n);
    if (!c->pending) return -1;
    memcpy(c->pending, buf, (size_t)n);
    c->pending_len = (size_t)n;
    return 1;
  }
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
      cert = argv[++i];
    } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
      key = argv[++i];
    } else {
      fprintf(stderr, "usage: c_tls_echo --cert FILE --key FILE [--host H] [--port P]\n");
      return 2;
    }
  }
  if (!cert || !key) {
    fprintf(stderr, "usage: c_tls_echo --cert FILE --key FILE [--host H] [--port P]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa_sig;
  memset(&sa_sig, 0, sizeof sa_sig);
  sa_sig.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
  sigaction(SIGINT, &sa_sig, NULL);
  sigaction(SIGTERM, &sa_sig, NULL);

  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    char b[256];
    ERR_error_string_n(ERR_get_error(), b, sizeof b);
    fprintf(stderr, "c_tls_echo: cannot load %s / %s: %s\n", cert, key, b);
    return 1;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);

  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "c_tls_echo: bad IPv4 address %s\n", host);
    return 1;
  }
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
    fprintf(stderr, "c_tls_echo: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
    return 1;
  }
  socklen_t slen = sizeof sa;
  getsockname(lfd, (struct sockaddr *)&sa, &slen);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  printf("listening on %s:%d\n", host, ntohs(sa.sin_port));
  fflush(stdout);

  struct epoll_event events[256];
  while (!stop) {
    /* a timeout, so that a signal that valgrind delivers late still ends the loop */
    int n = epoll_wait(ep, events, 256, 500);
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
          SSL *ssl = nc ? SSL_new(ctx) : NULL;
          if (!ssl) {
            free(nc);
            close(fd);
            continue;
          }
          nc->fd = fd;
          nc->ssl = ssl;
          SSL_set_fd(ssl, fd);
          SSL_set_accept_state(ssl);
          nc->events = EPOLLIN;
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        continue;
      }
      if (serve(c) < 0) close_conn(c);
    }
  }
  close(lfd);
  SSL_CTX_free(ctx);
  return 0;
}
