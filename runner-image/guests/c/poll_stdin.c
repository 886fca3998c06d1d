// Waits for stdin with poll() (WASI poll_oneoff on fd 0), then reads it: what a guest does that
// must not block forever on input that never comes. Exits 2 when poll itself fails.
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    struct pollfd stdin_poll = {.fd = 0, .events = POLLIN};
    int ready = poll(&stdin_poll, 1, 5000);
    if (ready < 0) {
        printf("poll failed: %s\n", strerror(errno));
        return 2;
    }
    char buffer[256];
    size_t n = fread(buffer, 1, sizeof buffer - 1, stdin);
    buffer[n] = '\0';
    printf("ready=%d readable=%d read=%s", ready, (stdin_poll.revents & POLLIN) ? 1 : 0, buffer);
    return 0;
}
