/* Heap-profile test program: two call sites keep 30 MiB and 10 MiB live until exit, a third
 * allocates 20 MiB and frees it all (allocated, not in use). Mid-way it sends itself SIGUSR2 and
 * checks that the preload library wrote the profile named by ALLOCATORS_PROFILE. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define BLOCK 1024

static void *volatile sink;

__attribute__((noinline)) static void **keep_thirty(void) {
    size_t n = (30u << 20) / BLOCK;
    void **v = calloc(n, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = malloc(BLOCK);
        memset(v[i], 1, BLOCK);
    }
    return v;
}

__attribute__((noinline)) static void **keep_ten(void) {
    size_t n = (10u << 20) / BLOCK;
    void **v = calloc(n, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = malloc(BLOCK);
        memset(v[i], 2, BLOCK);
    }
    return v;
}

__attribute__((noinline)) static void churn_twenty(void) {
    for (size_t i = 0; i < (20u << 20) / BLOCK; i++) {
        void *p = malloc(BLOCK);
        sink = p;
        free(p);
    }
}

int main(void) {
    void **a = keep_thirty();
    churn_twenty();
    void **b = keep_ten();
    sink = a;
    sink = b;
    const char *path = getenv("ALLOCATORS_PROFILE");
    if (path) {
        raise(SIGUSR2);
        struct stat st;
        int seen = 0;
        for (int i = 0; i < 100 && !seen; i++) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
            seen = stat(path, &st) == 0 && st.st_size > 0;
        }
        printf("signal profile %s\n", seen ? "written" : "missing");
    }
    printf("done\n");
    return 0; /* a and b stay live: the profile written at exit shows them in use */
}
