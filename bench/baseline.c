/*
 * baseline: the physical limit pushgate is measured against.
 *
 * A minimal WebSocket server in C for bench/loadgen.c's clients: it answers
 * the handshake and the connect + subscribe frame with canned replies, and
 * when told on stdin ("publish <data JSON>") builds one frame and writes
 * those same bytes to every connection, one send() each, as pushgate's hub
 * does. No protocol logic, no tokens, no history, no NSQ: what is left is the
 * kernel's cost of accepting and of writing to many sockets, which no server
 * can avoid. The benches run it beside pushgate on the same clients.
 *
 * It serves only loadgen, which sends the RFC 6455 example key: the accept
 * value is that example's.
 *
 * Commands on stdin, one per line:
 *   publish <data JSON>   -> frame it as a Centrifugo publication push, write to all
 *   count                 -> {"connections": N}
 *   quit
 *
 * Build: cc -O2 -o baseline bench/baseline.c
 * Usage: baseline --port P
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 1048576

struct client {
    int ready;       /* subscribed: gets publications */
    int in_len;
    char buf[2048];
};

static struct client *clients[MAX_FD];
static int *ready_fds;
static int n_ready, cap_ready;
static long offset;

static const char RESPONSE[] =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

static int server_frame(char *out, const char *payload, int len) {
    int h = 0;
    out[h++] = (char)0x81;
    if (len < 126) {
        out[h++] = (char)len;
    } else {
        out[h++] = 126;
        out[h++] = (char)((len >> 8) & 0xff);
        out[h++] = (char)(len & 0xff);
    }
    memcpy(out + h, payload, len);
    return h + len;
}

static void drop(int epfd, int fd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if (clients[fd] && clients[fd]->ready) {
        for (int i = 0; i < n_ready; i++)
            if (ready_fds[i] == fd) { ready_fds[i] = ready_fds[--n_ready]; break; }
    }
    free(clients[fd]);
    clients[fd] = NULL;
}

static void readable(int epfd, int fd) {
    struct client *c = clients[fd];
    for (;;) {
        ssize_t n = recv(fd, c->buf + c->in_len, sizeof c->buf - c->in_len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) { drop(epfd, fd); return; }
        if (n < 0) return;
        c->in_len += (int)n;
        if (!c->ready) {
            char *end = memmem(c->buf, c->in_len, "\r\n\r\n", 4);
            if (!end) continue;
            int head = (int)(end - c->buf) + 4;
            if (head == c->in_len) {  /* the head alone: answer it, wait for connect */
                send(fd, RESPONSE, sizeof RESPONSE - 1, MSG_NOSIGNAL);
                c->buf[0] = 0;
                c->in_len = 0;
                c->ready = -1;   /* upgraded, not subscribed yet */
                continue;
            }
        }
        if (c->ready == -1 && c->in_len >= 2) {
            /* The connect + subscribe frame: answer both in one write. */
            static const char replies[] = "{\"id\":1,\"connect\":{\"client\":\"baseline\",\"ping\":25,\"pong\":true}}";
            static const char sub[] = "{\"id\":2,\"subscribe\":{}}";
            char out[256];
            int k = server_frame(out, replies, sizeof replies - 1);
            k += server_frame(out + k, sub, sizeof sub - 1);
            send(fd, out, k, MSG_NOSIGNAL);
            c->ready = 1;
            c->in_len = 0;
            if (n_ready == cap_ready) {
                cap_ready = cap_ready ? cap_ready * 2 : 65536;
                ready_fds = realloc(ready_fds, cap_ready * sizeof(int));
            }
            ready_fds[n_ready++] = fd;
        } else if (c->ready == 1) {
            c->in_len = 0;   /* pongs and the like: nothing to do */
        }
    }
}

static void publish(const char *data) {
    char payload[8192], frame[8200];
    int len = snprintf(payload, sizeof payload, "{\"push\":{\"channel\":\"bench\",\"pub\":{\"data\":%s,\"offset\":%ld}}}",
                       data, ++offset);
    int flen = server_frame(frame, payload, len);
    for (int i = 0; i < n_ready; i++) send(ready_fds[i], frame, flen, MSG_NOSIGNAL | MSG_DONTWAIT);
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) { perror("listen"); return 2; }
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("{\"port\": %d}\n", ntohs(addr.sin_port));
    fflush(stdout);
    int epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = 0;
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
    struct epoll_event events[1024];
    char line[16384];
    int line_len = 0;
    for (;;) {
        int n = epoll_wait(epfd, events, 1024, -1);
        for (int e = 0; e < n; e++) {
            int fd = events[e].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (cfd < 0) break;
                    if (cfd >= MAX_FD) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    clients[cfd] = calloc(1, sizeof(struct client));
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev);
                }
            } else if (fd == 0) {
                ssize_t k = read(0, line + line_len, sizeof line - 1 - line_len);
                if (k <= 0) return 0;
                line_len += (int)k;
                char *nl;
                while ((nl = memchr(line, '\n', line_len))) {
                    *nl = 0;
                    if (!strncmp(line, "publish ", 8)) publish(line + 8);
                    else if (!strcmp(line, "count")) { printf("{\"connections\": %d}\n", n_ready); fflush(stdout); }
                    else if (!strcmp(line, "quit")) return 0;
                    int used = (int)(nl - line) + 1;
                    memmove(line, line + used, line_len - used);
                    line_len -= used;
                }
            } else if (clients[fd]) {
                readable(epfd, fd);
            }
        }
    }
}
