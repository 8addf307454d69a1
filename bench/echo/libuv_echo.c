/*
 * libuv_echo: a TCP echo server on libuv (Debian's libuv1-dev), one loop, one thread.
 *
 * Reads land in one shared buffer (the alloc callback hands out the same 64 KiB each time) and
 * are written back at once with uv_try_write. Whatever the socket does not take is copied and
 * queued with uv_write, and reading pauses until it is out (back-pressure), the usual libuv
 * idiom for an echo that neither allocates per read nor grows without bound.
 *
 *   libuv_echo [--host 127.0.0.1] [--port P]   (0 = ephemeral)
 *
 * Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM: exit 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BUF_SIZE (64 * 1024)

static char shared_buf[BUF_SIZE];
static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sig_int, sig_term;

typedef struct {
  uv_write_t req;
  char data[];
} PendingWrite;

static void on_close(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(shared_buf, BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write_done(uv_write_t *req, int status) {
  uv_stream_t *s = req->handle;
  free(req);
  if (status < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_close);
    return;
  }
  uv_read_start(s, on_alloc, on_read);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  if (nread < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_close);
    return;
  }
  if (nread == 0) return;
  uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
  int w = uv_try_write(s, &out, 1);
  if (w == UV_EAGAIN) w = 0;
  if (w < 0) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  if (w == nread) return;
  size_t rest = (size_t)nread - (size_t)w;
  PendingWrite *p = malloc(sizeof *p + rest);
  if (!p) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  memcpy(p->data, buf->base + w, rest);
  uv_buf_t tail = uv_buf_init(p->data, (unsigned)rest);
  uv_read_stop(s);
  if (uv_write(&p->req, s, &tail, 1, on_write_done) < 0) {
    free(p);
    uv_close((uv_handle_t *)s, on_close);
  }
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  uv_tcp_t *c = malloc(sizeof *c);
  if (!c) return;
  uv_tcp_init(loop, c);
  if (uv_accept(srv, (uv_stream_t *)c) != 0) {
    uv_close((uv_handle_t *)c, on_close);
    return;
  }
  uv_tcp_nodelay(c, 1);
  uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  (void)signum;
  uv_stop(loop);
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
      fprintf(stderr, "usage: libuv_echo [--host H] [--port P]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  struct sockaddr_in addr;
  int rc = uv_ip4_addr(host, port, &addr);
  if (rc == 0) rc = uv_tcp_init(loop, &server);
  if (rc == 0) rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (rc != 0) {
    fprintf(stderr, "libuv_echo: cannot listen on %s:%d: %s\n", host, port, uv_strerror(rc));
    return 1;
  }
  int len = sizeof addr;
  uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  uv_signal_init(loop, &sig_term);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
