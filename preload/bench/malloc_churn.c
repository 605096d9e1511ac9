/* A small malloc/free churn for `bench-harness c-programs`: each thread keeps 10,000 live blocks of
 * 16..1024 bytes (a few up to 64 KiB) and replaces a random one per step, touching each new block.
 * Usage: malloc_churn [threads] [steps per thread]. Prints a checksum of the sizes allocated. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SLOTS 10000

static long steps = 5000000;

static void *churn(void *arg) {
    uint64_t x = 0x9E3779B97F4A7C15ull * ((uintptr_t)arg + 1), sum = 0;
    char **slot = calloc(SLOTS, sizeof *slot);
    for (long i = 0; i < steps; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t k = x % SLOTS;
        size_t size = (x >> 20) % 64 == 0 ? 16 + (x >> 32) % 65536 : 16 + (x >> 32) % 1009;
        free(slot[k]);
        slot[k] = malloc(size);
        slot[k][0] = (char)i;
        slot[k][size - 1] = (char)k;
        sum += size;
    }
    for (size_t k = 0; k < SLOTS; k++) free(slot[k]);
    free(slot);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (argc > 2) steps = atol(argv[2]);
    pthread_t t[64];
    if (threads < 1 || threads > 64) return 2;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)i);
    uint64_t total = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (uintptr_t)r;
    }
    printf("%llu\n", (unsigned long long)total);
    return 0;
}
