/*
 * c_uring_echo: the io_uring floor, the counterpart of c_epoll_echo for the proactor loop. A
 * minimal hand-written TCP echo server on liburing: one thread, one ring, a multishot accept
 * (a plain accept re-armed per connection where the kernel lacks it), and per connection one
 * recv in flight into the connection's own buffer.
 *
 * What a recv brings is echoed by a send linked to the next recv (IOSQE_IO_LINK), so the recv
 * starts only once the whole buffer is out and never overwrites bytes still to be sent; that is
 * also the back-pressure, as in c_epoll_echo. The send asks for MSG_WAITALL (the kernel retries
 * a partial send itself) and IOSQE_CQE_SKIP_SUCCESS (a complete send posts no completion), so a
 * request costs one completion, and one io_uring_submit_and_wait per loop iteration both submits
 * everything the last batch of completions asked for and waits for the next batch. A send that
 * still ends short or fails posts its completion and cancels its linked recv; with both
 * completions seen, the rest is sent again (short) or the connection is closed (failed).
 *
 * --apart: the floor of a loop that keeps receiving and sending apart, as Strata's proactor
 * must (a link makes the next receive wait for the send: with a peer that does the same, two
 * full socket buffers would wait on each other). Per connection one multishot recv into
 * provided buffers (a buffer ring of BUFS buffers of APART_BUF_SIZE bytes) stays in flight; each
 * arrival is echoed by a send from the buffer it arrived in, with a completion of its own, after
 * which the buffer goes back to the ring. Arrivals while a send is in flight wait in order in a
 * per-connection queue, which the ring's size bounds. A request costs two completions.
 *
 *   c_uring_echo [--host 127.0.0.1] [--port P] [--apart]   (port 0 = ephemeral)
 *
 * Prints "listening on HOST:PORT" once ready; SIGINT or SIGTERM: exit 0. Those signals are
 * blocked and read through a signalfd polled on the ring, not left to interrupt the wait: no
 * signal can slip in between the check and the wait, and valgrind (the instruction counts)
 * keeps signals blocked inside io_uring_enter, where an EINTR would never come.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define RING_ENTRIES 4096
/* user_data: a Conn pointer (its recv), with the low bit set for its send; or one of these */
#define TAG_SEND 1u
#define DATA_ACCEPT 0u
#define DATA_SIGNAL 2u

typedef struct {
  int fd;
  unsigned len, off;       /* bytes of buf to echo; of them, bytes already sent */
  int send_failed;         /* the send posted a completion: short (off moved on) or failed */
  int send_error;          /* that send failed: close once its recv's cancellation is seen */
  int recv_cancelled;      /* the linked recv completed with -ECANCELED */
  char *buf;
  /* --apart: the buffer being sent (-1: none), and the arrivals waiting behind it */
  int sending;
  int recv_armed;          /* the multishot recv is in flight */
  int ended;               /* the peer closed or an operation failed: close once idle */
  unsigned qhead, qtail;   /* queue[qhead % BUFS .. qtail % BUFS) */
  unsigned short *queue;   /* buffer ids, BUFS of them at most (the ring holds no more) */
  unsigned *qlen;          /* their byte counts */
} Conn;

static struct io_uring ring;
static int lfd;
static int multishot_accept = 1;

#define BUFS 1024
#define APART_BUF_SIZE (16 * 1024)
#define BGID 0
static int apart;
static struct io_uring_buf_ring *buf_ring;
static char *bufs;

/* The next free SQE, submitting what is queued when the ring is full. */
static struct io_uring_sqe *get_sqe(void) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  while (!sqe) {
    io_uring_submit(&ring);
    sqe = io_uring_get_sqe(&ring);
  }
  return sqe;
}

static void arm_accept(void) {
  struct io_uring_sqe *sqe = get_sqe();
  if (multishot_accept) {
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data64(sqe, DATA_ACCEPT);
}

static void queue_recv(Conn *c) {
  struct io_uring_sqe *sqe = get_sqe();
  io_uring_prep_recv(sqe, c->fd, c->buf, BUF_SIZE, 0);
  io_uring_sqe_set_data(sqe, c);
}

/* Sends buf[off, len), then receives again once it is all out: a linked pair, queued in one
 * submission (a link cut by a full ring would let the recv start beside the send). */
static void queue_send_then_recv(Conn *c) {
  if (io_uring_sq_space_left(&ring) < 2) io_uring_submit(&ring);
  struct io_uring_sqe *sqe = get_sqe();
  io_uring_prep_send(sqe, c->fd, c->buf + c->off, c->len - c->off, MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | TAG_SEND);
  sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
  queue_recv(c);
}

static void close_conn(Conn *c) {
  close(c->fd);
  free(c->buf);
  free(c->queue);
  free(c->qlen);
  free(c);
}

/* --apart ---------------------------------------------------------------------------------- */

static void give_back(int bid) {
  io_uring_buf_ring_add(buf_ring, bufs + (size_t)bid * APART_BUF_SIZE, APART_BUF_SIZE,
                        (unsigned short)bid, io_uring_buf_ring_mask(BUFS), 0);
  io_uring_buf_ring_advance(buf_ring, 1);
}

static void arm_recv_multishot(Conn *c) {
  struct io_uring_sqe *sqe = get_sqe();
  io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BGID;
  io_uring_sqe_set_data(sqe, c);
  c->recv_armed = 1;
}

static void send_from(Conn *c, int bid) {
  struct io_uring_sqe *sqe = get_sqe();
  io_uring_prep_send(sqe, c->fd, bufs + (size_t)bid * APART_BUF_SIZE + c->off, c->len - c->off,
                     MSG_WAITALL | MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | TAG_SEND);
  c->sending = bid;
}

/* Nothing in flight any more after the end: the connection goes (its queued buffers first). */
static void close_if_idle(Conn *c) {
  if (!c->ended || c->recv_armed || c->sending >= 0) return;
  for (; c->qhead != c->qtail; c->qhead++) give_back(c->queue[c->qhead % BUFS]);
  close_conn(c);
}

static void on_recv_apart(Conn *c, const struct io_uring_cqe *cqe) {
  const int res = cqe->res;
  if (!(cqe->flags & IORING_CQE_F_MORE)) c->recv_armed = 0;
  if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
    const int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    if (c->ended) {
      give_back(bid);
    } else if (c->sending < 0) {
      c->len = (unsigned)res;
      c->off = 0;
      send_from(c, bid);
    } else {
      c->queue[c->qtail % BUFS] = (unsigned short)bid;
      c->qlen[c->qtail % BUFS] = (unsigned)res;
      c->qtail++;
    }
  } else if (res == 0 || (res < 0 && res != -ENOBUFS && res != -EINTR && res != -EAGAIN)) {
    c->ended = 1; /* the end of the stream, or a failure */
  }
  /* A multishot recv that ended with the stream still open (no buffer free, or the kernel's
   * choice): receive again. */
  if (!c->recv_armed && !c->ended) arm_recv_multishot(c);
  close_if_idle(c);
}

static void on_send_apart(Conn *c, int res) {
  const int bid = c->sending;
  c->sending = -1;
  if (res > 0 && (unsigned)res < c->len - c->off && !c->ended) {
    c->off += (unsigned)res; /* short: the rest, from the same buffer */
    send_from(c, bid);
    return;
  }
  give_back(bid);
  if (res < 0) {
    c->ended = 1;
    shutdown(c->fd, SHUT_RDWR); /* ends the recv */
  } else if (c->qhead != c->qtail && !c->ended) {
    const unsigned i = c->qhead++ % BUFS;
    c->len = c->qlen[i];
    c->off = 0;
    send_from(c, c->queue[i]);
  }
  close_if_idle(c);
}

/* ------------------------------------------------------------------------------------------ */

/* Both completions of a broken pair are in: send the rest again, or close. */
static void after_broken_pair(Conn *c) {
  if (!c->send_failed || !c->recv_cancelled) return;
  c->send_failed = c->recv_cancelled = 0;
  if (c->send_error) {
    close_conn(c);
  } else {
    queue_send_then_recv(c);
  }
}

static void on_accept(const struct io_uring_cqe *cqe) {
  if (cqe->res >= 0) {
    int fd = cqe->res, one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn *c = calloc(1, sizeof *c);
    char *buf = apart ? NULL : malloc(BUF_SIZE);
    unsigned short *queue = apart ? malloc(BUFS * sizeof *queue) : NULL;
    unsigned *qlen = apart ? malloc(BUFS * sizeof *qlen) : NULL;
    if (!c || (apart ? !queue || !qlen : !buf)) {
      free(c);
      free(buf);
      free(queue);
      free(qlen);
      close(fd);
    } else {
      c->fd = fd;
      c->buf = buf;
      c->queue = queue;
      c->qlen = qlen;
      c->sending = -1;
      if (apart) {
        arm_recv_multishot(c);
      } else {
        queue_recv(c);
      }
    }
  } else if (cqe->res == -EINVAL && multishot_accept) {
    multishot_accept = 0; /* a kernel without multishot accept (before 5.19) */
  }
  /* Other errors (EMFILE, ECONNABORTED...): accept again, as c_epoll_echo does. */
  if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept();
}

static void on_send(Conn *c, int res) {
  if (res >= 0 && (unsigned)res >= c->len - c->off) return; /* complete (not posted, normally) */
  if (res > 0) {
    c->off += (unsigned)res;
  } else {
    c->send_error = 1;
  }
  c->send_failed = 1;
  after_broken_pair(c);
}

static void on_recv(Conn *c, int res) {
  if (res == -ECANCELED) {
    c->recv_cancelled = 1;
    after_broken_pair(c);
  } else if (res > 0) {
    c->len = (unsigned)res;
    c->off = 0;
    queue_send_then_recv(c);
  } else if (res != -EINTR && res != -EAGAIN) {
    close_conn(c); /* EOF or an error; the linked send before it had succeeded */
  } else {
    queue_recv(c);
  }
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
      host = argv[++i];
    } else if (strcmp(argv[i], "--apart") == 0) {
      apart = 1;
    } else {
      fprintf(stderr, "usage: c_uring_echo [--host H] [--port P] [--apart]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop_signals, NULL);
  int sfd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    perror("c_uring_echo: signalfd");
    return 1;
  }

  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "c_uring_echo: bad IPv4 address %s\n", host);
    return 1;
  }
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
    fprintf(stderr, "c_uring_echo: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
    return 1;
  }
  socklen_t slen = sizeof sa;
  getsockname(lfd, (struct sockaddr *)&sa, &slen);

  /* Completion work runs only when this thread waits for it (kernel 6.1+), in batches; an
   * older kernel refuses those flags and gets a plain ring. */
  int err = io_uring_queue_init(RING_ENTRIES, &ring,
                                IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
  if (err == -EINVAL) err = io_uring_queue_init(RING_ENTRIES, &ring, 0);
  if (err < 0) {
    fprintf(stderr, "c_uring_echo: io_uring_queue_init: %s\n", strerror(-err));
    return 1;
  }
  if (!(ring.features & IORING_FEAT_CQE_SKIP)) {
    fprintf(stderr, "c_uring_echo: the kernel lacks IOSQE_CQE_SKIP_SUCCESS (5.17+)\n");
    return 1;
  }
  if (apart) {
    /* The ring's entries and the buffers, in one anonymous mapping: only pages written to
     * cost memory. */
    const size_t entries_size = BUFS * sizeof(struct io_uring_buf);
    void *map = mmap(NULL, entries_size + (size_t)BUFS * APART_BUF_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    if (map != MAP_FAILED) {
      buf_ring = map;
      bufs = (char *)map + entries_size;
      io_uring_buf_ring_init(buf_ring);
      reg.ring_addr = (uint64_t)(uintptr_t)buf_ring;
      reg.ring_entries = BUFS;
      reg.bgid = BGID;
    }
    err = map == MAP_FAILED ? -ENOMEM : io_uring_register_buf_ring(&ring, &reg, 0);
    if (err != 0) {
      fprintf(stderr, "c_uring_echo: --apart needs provided-buffer rings (5.19+): %s\n",
              strerror(-err));
      return 1;
    }
    for (int i = 0; i < BUFS; i++) {
      io_uring_buf_ring_add(buf_ring, bufs + (size_t)i * APART_BUF_SIZE, APART_BUF_SIZE,
                            (unsigned short)i, io_uring_buf_ring_mask(BUFS), i);
    }
    io_uring_buf_ring_advance(buf_ring, BUFS);
  }
  arm_accept();
  struct io_uring_sqe *sqe = get_sqe();
  io_uring_prep_poll_add(sqe, sfd, POLLIN); /* readable: SIGINT or SIGTERM is pending */
  io_uring_sqe_set_data64(sqe, DATA_SIGNAL);
  printf("listening on %s:%d\n", host, ntohs(sa.sin_port));
  fflush(stdout);

  int stop = 0;
  while (!stop) {
    int r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      fprintf(stderr, "c_uring_echo: io_uring_submit_and_wait: %s\n", strerror(-r));
      return 1;
    }
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      uint64_t data = io_uring_cqe_get_data64(cqe);
      if (data == DATA_ACCEPT) {
        on_accept(cqe);
      } else if (data == DATA_SIGNAL) {
        stop = 1;
      } else if (data & TAG_SEND) {
        Conn *c = (Conn *)(uintptr_t)(data & ~(uint64_t)TAG_SEND);
        if (apart) {
          on_send_apart(c, cqe->res);
        } else {
          on_send(c, cqe->res);
        }
      } else if (apart) {
        on_recv_apart((Conn *)(uintptr_t)data, cqe);
      } else {
        on_recv((Conn *)(uintptr_t)data, cqe->res);
      }
      seen++;
    }
    io_uring_cq_advance(&ring, seen);
  }
  io_uring_queue_exit(&ring);
  close(lfd);
  return 0;
}
