/* Threads whose only allocator calls happen in a pthread key destructor, that is after the
 * thread's C++/Rust thread-local destructors have run: with "alloc", each thread's first
 * allocation (blocks of several sizes, all freed) happens there; with "free", the thread only
 * frees, there, a batch of blocks the main thread allocated. Either way the allocator must still
 * hand the thread's state back when the thread ends. Prints the resident growth in KiB between
 * the end of a warm-up of 500 threads and the end of all of them.
 * Usage: key_destructor_threads alloc|free [threads] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_key_t key;
static int free_mode;

static void destructor(void *value) {
    if (free_mode) {
        void **batch = value;
        for (int i = 0; batch[i]; i++) free(batch[i]);
        free(batch);
        return;
    }
    for (int i = 0; i < 64; i++) {
        size_t n = 16 + (size_t)i * 61 % 2000;
        char *p = malloc(n);
        if (p) { memset(p, i, n); free(p); }
    }
}

static void *work(void *arg) {
    pthread_setspecific(key, arg);
    return NULL;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (f) { if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = 0; fclose(f); }
    return resident * 4;
}

static int run(long n) {
    for (long i = 0; i < n; i++) {
        void *arg = (void *)1;
        if (free_mode) {
            void **batch = calloc(33, sizeof *batch);
            if (!batch) return 1;
            for (int k = 0; k < 32; k++) batch[k] = malloc(16 + (size_t)(k * 37 + i) % 500);
            arg = batch;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, work, arg) != 0) return 1;
        pthread_join(t, NULL);
    }
    return 0;
}

int main(int argc, char **argv) {
    free_mode = argc > 1 && strcmp(argv[1], "free") == 0;
    long threads = argc > 2 ? atol(argv[2]) : 3000;
    if (pthread_key_create(&key, destructor) != 0) return 1;
    if (run(500)) return 1;
    long before = rss_kib();
    if (run(threads - 500)) return 1;
    printf("growth_kib %ld\n", rss_kib() - before);
    return 0;
}
