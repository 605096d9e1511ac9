/* cache-thrash: false sharing caused by the allocator, written for `bench-harness c-programs`
 * from the description of Hoard's cache-thrash: each thread repeatedly allocates an 8-byte
 * object, writes it many times, and frees it. An allocator that hands neighbouring bytes of one
 * cache line to different threads makes their writes fight over the line.
 * Usage: cache_thrash [threads] [objects per thread] [writes per object]. Prints a checksum of
 * the values read back. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static long objects = 200000, writes = 1000;

static void *thrash(void *arg) {
    uint64_t sum = 0, id = (uintptr_t)arg;
    for (long i = 0; i < objects; i++) {
        volatile uint64_t *p = malloc(8);
        if (!p) return (void *)~(uintptr_t)0;
        *p = id;
        for (long j = 0; j < writes; j++) *p += (uint64_t)j ^ id;
        sum += *p;
        free((void *)p);
    }
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) objects = atol(argv[2]);
    if (argc > 3) writes = atol(argv[3]);
    if (threads < 1 || threads > 256 || objects < 1 || writes < 1) {
        fprintf(stderr, "usage: cache_thrash [threads 1-256] [objects] [writes per object]\n");
        return 2;
    }
    pthread_t t[256];
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, thrash, (void *)(uintptr_t)i) != 0) return 1;
    uint64_t sum = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (uintptr_t)r;
    }
    printf("cache-thrash threads %d objects %ld writes %ld checksum %llu\n", threads, objects,
           writes, (unsigned long long)sum);
    return 0;
}
