/* Thousands of short-lived threads, four at a time, each allocating and freeing, and returning a
 * block that the main thread frees. Each thread's first allocation is where a preload library's
 * allocator sets up its per-thread state (and glibc allocates a destructor node through it), and
 * each exit is where that state is handed back. Prints the number of threads and a checksum.
 * Usage: thread_churn [threads] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *work(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    for (int i = 0; i < 100; i++) {
        size_t n = 16 + (id * 31 + (size_t)i * 97) % 3000;
        char *p = malloc(n);
        if (!p) return NULL;
        memset(p, (int)i, n);
        free(p);
    }
    uintptr_t *out = malloc(sizeof *out);
    if (out) *out = id * 3 + 1;
    return out;
}

int main(int argc, char **argv) {
    long threads = argc > 1 ? atol(argv[1]) : 4000;
    uint64_t sum = 0;
    for (long r = 0; r < threads; r += 4) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
            if (pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(r + i)) != 0) return 1;
        for (int i = 0; i < 4; i++) {
            void *res;
            pthread_join(t[i], &res);
            if (!res) return 1;
            sum += *(uintptr_t *)res;
            free(res);
        }
    }
    printf("threads %ld checksum %llu\n", threads, (unsigned long long)sum);
    return 0;
}
