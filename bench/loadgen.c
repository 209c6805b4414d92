/*
 * loadgen: many WebSocket clients of the Centrifugo JSON protocol in one
 * process, cheap enough that the machine's CPU goes to the server measured.
 *
 * Each connection does the opening handshake, sends connect (its own token
 * from --tokens, one per line) and subscribe (--channel) in one frame, and
 * counts as ready when the subscribe reply arrives. Ready connections answer
 * pings with pongs, count publications, and take the publisher's time out of
 * each one ("ts": seconds since the epoch, in the data) to measure
 * publish -> receive latency.
 *
 * Output is JSON lines on stdout:
 *   {"ready": N, "errors": E, "seconds": S, "why": {REASON: COUNT, ...}}
 *                                                when every connection has tried
 *   (REASON: what ended a connection before it was ready, e.g. "connect
 *   ECONNREFUSED", "eof in handshake", "status HTTP/1.1 503", "close 3501")
 *   and "retried": R, the handshakes refused with 503 (a node shedding load,
 *   or over --connect-rate) and tried again after a backoff (0.5 s doubling
 *   to 10 s, with jitter), as the SDKs do;
 *   a connection refused MAX_TRIES times is an error.
 * then, for each line read on stdin:
 *   "report"  -> {"received": R, "closed": C, "ready": N, "resubscribed": U,
 *                "latencies_ms": [...]}  (and the latency samples are forgotten;
 *                U counts subscriptions the server ended, subscribed again as
 *                the SDKs do)
 *   "quit"    -> exit
 *
 * Build: cc -O2 -o loadgen bench/loadgen.c   (bench/ scripts do it)
 * Usage: loadgen --port P --connections N --tokens FILE [--host H] [--channel C]
 *                [--concurrency K] [--sources 127.0.0.1,127.0.0.2] [--sample N]
 *                [--path /connection/websocket] [--offset K] [--shared N --shared-prefix P]
 *
 * --buffer B: bytes of receive buffer a connection (4096; the largest frame).
 * --offset K: connection i uses token K + i (so several processes over one
 * file have distinct users); its user number is K + i.
 * --shared N: each connection also subscribes to <P><its user number % N>
 * (ids 1 connect, 2 --channel, 3 the shared one; ready on the last reply).
 * Publications on a personal channel ("#...") are counted apart: each must
 * carry "to":<the user number> in its data, or it counts as misdelivered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum state { IDLE, CONNECTING, HANDSHAKE, SUBSCRIBING, READY, DEAD };

struct conn {
    int fd;
    enum state state;
    int out_len, out_off;   /* pending handshake/connect bytes */
    char *out;
    int in_len;             /* bytes in buf */
    char *buf;              /* --buffer bytes, allocated at the start */
    unsigned char tries;    /* handshakes refused with 503 so far */
};

#define MAX_TRIES 10
/* Connections waiting to try again after a 503: a min-heap on when. */
static int *retry_ids;
static double *retry_at;
static long n_retry, retried;

static void retry_push(int id, double when) {
    long i = n_retry++;
    while (i > 0 && retry_at[(i - 1) / 2] > when) {
        retry_ids[i] = retry_ids[(i - 1) / 2];
        retry_at[i] = retry_at[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    retry_ids[i] = id;
    retry_at[i] = when;
}

static int retry_pop(void) {
    int top = retry_ids[0];
    int id = retry_ids[--n_retry];
    double when = retry_at[n_retry];
    long i = 0;
    for (;;) {
        long child = 2 * i + 1;
        if (child >= n_retry) break;
        if (child + 1 < n_retry && retry_at[child + 1] < retry_at[child]) child++;
        if (retry_at[child] >= when) break;
        retry_ids[i] = retry_ids[child];
        retry_at[i] = retry_at[child];
        i = child;
    }
    retry_ids[i] = id;
    retry_at[i] = when;
    return top;
}

static struct conn *conns;
static int n_conns, concurrency = 200, sample_every = 10;
static const char *host = "127.0.0.1", *channel = "bench", *path = "/connection/websocket";
static int port;
static char **tokens;
static int n_tokens;
static struct in_addr sources[1024];
static int n_sources = 1;
static int epfd;
static long ready, errors, started, in_flight, received, closed_count, resubscribed;
static long personal, misdelivered, pongs;
static int offset, shared, buffer_size = 4096;
static long token_skip;   /* the line of tokens[0] in --tokens */
static const char *shared_prefix = "shared:";
static double *latencies;
static long n_latencies, cap_latencies;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(2); }

static void add_latency(double ms) {
    if (n_latencies == cap_latencies) {
        cap_latencies = cap_latencies ? cap_latencies * 2 : 65536;
        latencies = realloc(latencies, cap_latencies * sizeof(double));
        if (!latencies) die("realloc");
    }
    latencies[n_latencies++] = ms;
}

/* A masked client frame (zero mask key: valid, and the payload stays as is). */
static int client_frame(char *out, int opcode, const char *payload, int len) {
    int h = 0;
    out[h++] = (char)(0x80 | opcode);
    if (len < 126) {
        out[h++] = (char)(0x80 | len);
    } else {
        out[h++] = (char)(0x80 | 126);
        out[h++] = (char)((len >> 8) & 0xff);
        out[h++] = (char)(len & 0xff);
    }
    memset(out + h, 0, 4);
    h += 4;
    memcpy(out + h, payload, len);
    return h + len;
}

/* Why connections failed before they were ready: a reason without a count
   is no help in a report ("4,412 errors, cause unknown"). */
static void fail(struct conn *c);

#define MAX_REASONS 64
static struct { char what[48]; long count; } reasons[MAX_REASONS];
static int n_reasons;

static const char *state_name(int state) {
    static const char *names[] = {"idle", "connecting", "handshake", "subscribing", "ready", "dead"};
    return state >= 0 && state <= DEAD ? names[state] : "?";
}

static void fail_why(struct conn *c, const char *what) {
    if (c->state == DEAD) return;
    if (c->state != READY) {
        char label[48];
        snprintf(label, sizeof label, "%s", what);
        int i = 0;
        while (i < n_reasons && strcmp(reasons[i].what, label) != 0) i++;
        if (i == n_reasons && n_reasons < MAX_REASONS) {
            snprintf(reasons[i].what, sizeof reasons[i].what, "%s", label);
            n_reasons++;
        }
        if (i < n_reasons) reasons[i].count++;
    }
    fail(c);
}

static void fail_errno(struct conn *c, const char *stage, int err) {
    char label[48];
    const char *name = strerrorname_np(err);
    snprintf(label, sizeof label, "%s %s in %s", stage, name ? name : "?", state_name(c->state));
    fail_why(c, label);
}

/* Refused with 503: close, and start it again after a backoff (not an error yet). */
static void retry_later(struct conn *c) {
    c->tries++;
    retried++;
    in_flight--;
    c->state = IDLE;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    c->out = NULL;
    /* Backoff as centrifuge-js's: 0.5 s doubling to at most 10 s, with jitter. */
    double backoff = 0.5 * (double)(1 << (c->tries < 5 ? c->tries - 1 : 4));
    if (backoff > 10) backoff = 10;
    retry_push((int)(c - conns), now() + backoff * (0.5 + (double)rand() / RAND_MAX));
}

static void fail(struct conn *c) {
    if (c->state == DEAD) return;
    if (c->state != READY) { errors++; in_flight--; }
    else closed_count++;
    c->state = DEAD;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    c->out = NULL;
}

static void start(int i) {
    struct conn *c = &conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = sources[i % n_sources]};
    /* Choose the source port at connect(), not at bind(): bind() to port 0
       must find a port no other socket of that address holds, a search
       through the bind table that grows with the connections (at 880,000 it
       was a quarter of the box's CPU, and the clients answered pings too
       late); connect() needs only a free 4-tuple. */
    if (n_sources > 1) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (n_sources > 1 && bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind source");
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &dst.sin_addr);
    c->fd = fd;
    c->state = CONNECTING;
    if (!c->buf && !(c->buf = malloc(buffer_size))) die("malloc");
    c->in_len = 0;
    /* The handshake, then connect + subscribe in one frame. */
    char request[1024], body[2048];
    int rlen = snprintf(request, sizeof request,
                        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                        path, host, port);
    int blen = snprintf(body, sizeof body, "{\"id\":1,\"connect\":{\"token\":\"%s\"}}\n"
                        "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}", tokens[(offset + i - token_skip) % n_tokens], channel);
    if (shared)
        blen += snprintf(body + blen, sizeof body - blen, "\n{\"id\":3,\"subscribe\":{\"channel\":\"%s%d\"}}",
                         shared_prefix, (offset + i) % shared);
    c->out = malloc(rlen + blen + 16);
    memcpy(c->out, request, rlen);
    c->out_len = rlen + client_frame(c->out + rlen, 1, body, blen);
    c->out_off = 0;
    in_flight++;
    started++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) { fail_errno(c, "connect", errno); return; }
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

static void send_pending(struct conn *c) {
    /* Everything up to the end of the handshake request goes first; the
       connect frame only after the 101 (out_off marks the split). */
    while (c->out && c->out_off < c->out_len) {
        int limit = c->out_len;
        if (c->state == CONNECTING || c->state == HANDSHAKE) {
            char *end = memmem(c->out, c->out_len, "\r\n\r\n", 4);
            limit = (int)(end - c->out) + 4;
            if (c->out_off >= limit) break;
        }
        ssize_t n = send(c->fd, c->out + c->out_off, limit - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) return;
            fail_errno(c, "send", errno);
            return;
        }
        c->out_off += (int)n;
    }
    if (c->out && c->out_off == c->out_len) {   /* all sent: a million of them add up */
        free(c->out);
        c->out = NULL;
    }
    if (c->state == CONNECTING) {
        c->state = HANDSHAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)(c - conns)};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void fail_reply(struct conn *c, const char *p, int len) {
    const char *code = memmem(p, len, "\"code\":", 7);
    char label[48];
    snprintf(label, sizeof label, "error reply %ld", code ? strtol(code + 7, NULL, 10) : -1L);
    fail_why(c, label);
}

static void on_message(struct conn *c, const char *p, int len) {
    if (len == 2 && p[0] == '{' && p[1] == '}') {          /* a ping */
        char pong[8];
        int n = client_frame(pong, 1, "{}", 2);
        send(c->fd, pong, n, MSG_NOSIGNAL);
        pongs++;
        return;
    }
    if (c->state == SUBSCRIBING) {
        if (memmem(p, len, shared ? "\"id\":3" : "\"id\":2", 6)) {
            if (memmem(p, len, "\"error\"", 7)) { fail_reply(c, p, len); return; }
            c->state = READY;
            ready++;
            in_flight--;
        } else if (memmem(p, len, "\"error\"", 7)) {
            fail_reply(c, p, len);
        }
        return;
    }
    const char *unsub;
    if (c->state == READY && memmem(p, len, "\"push\"", 6) &&
        (unsub = memmem(p, len, "\"unsubscribe\"", 13)) != NULL) {
        /* The server ended the subscription. With a code of 2500 or more
           (2500: this node lost a publication the client should have had)
           the SDKs subscribe again, and so does this client; below 2500
           the subscription is over for them, and for it. */
        const char *code = memmem(unsub, len - (unsub - p), "\"code\":", 7);
        if (!code || strtol(code + 7, NULL, 10) < 2500) return;
        char body[192], frame[208];
        int bl = snprintf(body, sizeof body, "{\"id\":3,\"subscribe\":{\"channel\":\"%s\"}}", channel);
        if (bl > 0 && bl < (int)sizeof body) {
            int n = client_frame(frame, 1, body, bl);
            send(c->fd, frame, n, MSG_NOSIGNAL);
            resubscribed++;
        }
        return;
    }
    if (c->state == READY && memmem(p, len, "\"pub\"", 5)) {
        received++;
        if (memmem(p, len, "\"channel\":\"#", 12)) {
            /* A personal channel's publication: for this user only. */
            const char *to = memmem(p, len, "\"to\":", 5);
            personal++;
            if (!to || strtol(to + 5, NULL, 10) != offset + (c - conns)) misdelivered++;
        }
        if (sample_every && (offset + (c - conns)) % sample_every == 0) {
            const char *ts = memmem(p, len, "\"ts\":", 5);
            if (ts) add_latency((now() - strtod(ts + 5, NULL)) * 1000.0);
        }
    }
}

static void on_readable(struct conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->in_len, buffer_size - c->in_len, 0);
        if (n == 0) {
            char label[48];
            snprintf(label, sizeof label, "eof in %s", state_name(c->state));
            fail_why(c, label);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN) break;
            fail_errno(c, "recv", errno);
            return;
        }
        c->in_len += (int)n;
        if (c->state == HANDSHAKE) {
            char *end = memmem(c->buf, c->in_len, "\r\n\r\n", 4);
            if (!end) continue;
            if (c->in_len >= 12 && memcmp(c->buf, "HTTP/1.1 503", 12) == 0 && c->tries + 1 < MAX_TRIES) {
                retry_later(c);
                return;
            }
            if (c->in_len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                char label[48];
                snprintf(label, sizeof label, "status %.12s", c->in_len >= 12 ? c->buf : "(short)");
                fail_why(c, label);
                return;
            }
            int head = (int)(end - c->buf) + 4;
            memmove(c->buf, c->buf + head, c->in_len - head);
            c->in_len -= head;
            c->state = SUBSCRIBING;
            send_pending(c);
            if (c->state == DEAD) return;
        }
        /* Server frames: unmasked, final. */
        int pos = 0;
        while (c->in_len - pos >= 2) {
            unsigned char b0 = (unsigned char)c->buf[pos], b1 = (unsigned char)c->buf[pos + 1];
            int hlen = 2;
            long plen = b1 & 0x7f;
            if (plen == 126) {
                if (c->in_len - pos < 4) break;
                plen = ((unsigned char)c->buf[pos + 2] << 8) | (unsigned char)c->buf[pos + 3];
                hlen = 4;
            } else if (plen == 127) {
                fail_why(c, "frame too big");  /* no message here is that big */
                return;
            }
            if (plen + hlen > (long)buffer_size) { fail_why(c, "frame over --buffer"); return; }
            if (c->in_len - pos < hlen + plen) break;
            if ((b0 & 0x0f) == 0x8) {   /* the server closed: say with which code */
                char label[48];
                int code = plen >= 2 ? ((unsigned char)c->buf[pos + hlen] << 8 | (unsigned char)c->buf[pos + hlen + 1]) : 0;
                snprintf(label, sizeof label, "close %d in %s", code, state_name(c->state));
                fail_why(c, label);
                return;
            }
            on_message(c, c->buf + pos + hlen, (int)plen);
            if (c->state == DEAD) return;
            pos += hlen + (int)plen;
        }
        if (pos) {
            memmove(c->buf, c->buf + pos, c->in_len - pos);
            c->in_len -= pos;
        }
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(void) {
    qsort(latencies, n_latencies, sizeof(double), cmp_double);
    printf("{\"received\": %ld, \"closed\": %ld, \"ready\": %ld, \"resubscribed\": %ld, \"personal\": %ld, "
           "\"misdelivered\": %ld, \"pongs\": %ld, \"latencies_ms\": [",
           received, closed_count, ready, resubscribed, personal, misdelivered, pongs);
    /* At most 2,000 evenly spaced samples of the sorted latencies: enough for percentiles. */
    long step = n_latencies > 2000 ? n_latencies / 2000 : 1;
    for (long i = 0, k = 0; i < n_latencies; i += step, k++) printf("%s%.3f", k ? "," : "", latencies[i]);
    printf("], \"samples\": %ld}\n", n_latencies);
    fflush(stdout);
    n_latencies = 0;
}

/* The tokens of lines first .. first + want - 1 (token_skip = first), or,
   when the file has fewer lines, all of them (token_skip = 0, used in turn):
   a million tokens are 150 MB, and each process needs only its own. */

static char **read_tokens(const char *file, int *count, long first, long want) {
    FILE *f = fopen(file, "r");
    if (!f) die(file);
    long lines = 0;
    char *line = NULL;
    size_t size = 0;
    ssize_t len;
    while ((len = getline(&line, &size, f)) > 0)
        if (len > 1) lines++;
    rewind(f);
    if (lines < first + want) first = 0, want = lines;
    token_skip = first;
    int cap = 1024, n = 0;
    long seen = 0;
    char **out = malloc(cap * sizeof(char *));
    while ((len = getline(&line, &size, f)) > 0 && n < want) {
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        if (seen++ < first) continue;
        if (n == cap) out = realloc(out, (cap *= 2) * sizeof(char *));
        out[n++] = strdup(line);
    }
    free(line);
    fclose(f);
    *count = n;
    return out;
}

int main(int argc, char **argv) {
    const char *tokens_file = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--connections")) n_conns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--concurrency")) concurrency = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens_file = argv[i + 1];
        else if (!strcmp(argv[i], "--channel")) channel = argv[i + 1];
        else if (!strcmp(argv[i], "--path")) path = argv[i + 1];
        else if (!strcmp(argv[i], "--sample")) sample_every = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--offset")) offset = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--buffer")) buffer_size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shared")) shared = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shared-prefix")) shared_prefix = argv[i + 1];
        else if (!strcmp(argv[i], "--sources")) {
            n_sources = 0;
            char *list = strdup(argv[i + 1]);
            for (char *s = strtok(list, ","); s && n_sources < 1024; s = strtok(NULL, ","))
                inet_pton(AF_INET, s, &sources[n_sources++]);
        } else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (!port || !n_conns || !tokens_file) {
        fprintf(stderr, "usage: loadgen --port P --connections N --tokens FILE [options]\n");
        return 2;
    }
    if (n_sources == 0) { n_sources = 1; inet_pton(AF_INET, "127.0.0.1", &sources[0]); }
    tokens = read_tokens(tokens_file, &n_tokens, offset, n_conns);
    if (!n_tokens) { fprintf(stderr, "no tokens in %s\n", tokens_file); return 2; }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)n_conns + 64 > rl.rlim_cur) {
        fprintf(stderr, "%d connections need more open files than the limit %ld\n", n_conns, (long)rl.rlim_cur);
        return 2;
    }
    conns = calloc(n_conns, sizeof *conns);
    retry_ids = calloc(n_conns, sizeof *retry_ids);
    retry_at = calloc(n_conns, sizeof *retry_at);
    if (!conns || !retry_ids || !retry_at) die("calloc");
    srand((unsigned)getpid());
    epfd = epoll_create1(0);
    struct epoll_event stdin_ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &stdin_ev);
    double t0 = now();
    int next = 0, announced = 0;
    struct epoll_event events[1024];
    for (;;) {
        double t = now();
        while (n_retry && in_flight < concurrency && retry_at[0] <= t) start(retry_pop());
        while (next < n_conns && in_flight < concurrency) start(next++);
        if (!announced && next == n_conns && in_flight == 0 && n_retry == 0) {
            printf("{\"ready\": %ld, \"errors\": %ld, \"retried\": %ld, \"seconds\": %.3f, \"why\": {",
                   ready, errors, retried, now() - t0);
            for (int r = 0; r < n_reasons; r++)
                printf("%s\"%s\": %ld", r ? ", " : "", reasons[r].what, reasons[r].count);
            printf("}}\n");
            fflush(stdout);
            announced = 1;
        }
        int n = epoll_wait(epfd, events, 1024, 100);
        for (int e = 0; e < n; e++) {
            uint32_t id = events[e].data.u32;
            if (id == UINT32_MAX) {
                char line[64];
                ssize_t k = read(0, line, sizeof line - 1);
                if (k <= 0) return 0;
                line[k] = 0;
                if (strstr(line, "report")) report();
                if (strstr(line, "quit")) return 0;
                continue;
            }
            struct conn *c = &conns[id];
            if (c->state == DEAD) continue;
            if (events[e].events & (EPOLLERR | EPOLLHUP) && !(events[e].events & EPOLLIN)) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) fail_errno(c, "hangup", err);
                else fail_why(c, "hangup");
                continue;
            }
            if (c->state == CONNECTING && (events[e].events & EPOLLOUT)) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { fail_errno(c, "connect", err); continue; }
                send_pending(c);
                continue;
            }
            if (events[e].events & EPOLLIN) on_readable(c);
        }
    }
}
