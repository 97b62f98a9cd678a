/*
 * A disk whose sync is slow, for `LOAD_ONLY=creates` (benches/README.md): preloaded into a
 * process, every fsync and fdatasync makes the real call, then waits SLOW_SYNC_US microseconds
 * more off the CPU, as a write to network block storage waits for its replicas.
 *
 *   cc -O2 -shared -fPIC -o /tmp/slow_sync.so benches/common/slow_sync.c -ldl
 *   LD_PRELOAD=/tmp/slow_sync.so SLOW_SYNC_US=1000 LOAD_ONLY=creates cargo bench --bench load
 *
 * Everything the run starts inherits it: fio, the raw redb loop and kurz see the same disk.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

static long delay_us(void) {
    static long us = -1;
    if (us < 0) {
        const char *set = getenv("SLOW_SYNC_US");
        us = set ? atol(set) : 0;
    }
    return us;
}

static void wait_out(void) {
    long us = delay_us();
    if (us > 0) {
        struct timespec left = {us / 1000000, (us % 1000000) * 1000};
        while (nanosleep(&left, &left) != 0) {
        }
    }
}

/* The real call, then the wait; the caller sees the real call's result and errno. */
#define SLOW(name)                                                        \
    int name(int fd) {                                                    \
        static int (*real)(int);                                          \
        if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, #name);          \
        int done = real(fd);                                              \
        int error = errno;                                                \
        wait_out();                                                       \
        errno = error;                                                    \
        return done;                                                      \
    }

SLOW(fsync)
SLOW(fdatasync)
