/* malloc-thread: glibc's bench-malloc-thread shape, written for `bench-harness c-programs` from
 * its description: each of N threads runs its own loop over a working set of 4,096 slots,
 * freeing a random slot and allocating a block of a random small size into it (most of 8..512
 * bytes, one in 16 up to 4 KiB), touching it. No block crosses threads.
 * Usage: malloc_thread [threads] [steps per thread]. Prints the blocks and bytes allocated and
 * a checksum of the bytes read back on free. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SLOTS 4096

static long steps = 10000000;

struct result { uint64_t id, blocks, bytes, sum; };

static void *loop(void *arg) {
    struct result *res = arg;
    uint64_t x = 0xD1B54A32D192ED03ull * (res->id + 1);
    unsigned char **slot = calloc(SLOTS, sizeof *slot);
    size_t *len = calloc(SLOTS, sizeof *len);
    if (!slot || !len) return (void *)1;
    for (long i = 0; i < steps; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t k = x % SLOTS;
        if (slot[k]) {
            res->sum += slot[k][0] + slot[k][len[k] - 1];
            free(slot[k]);
        }
        size_t size = (x >> 20) % 16 == 0 ? 8 + (x >> 32) % 4089 : 8 + (x >> 32) % 505;
        slot[k] = malloc(size);
        if (!slot[k]) return (void *)1;
        slot[k][0] = (unsigned char)i;
        slot[k][size - 1] = (unsigned char)k;
        len[k] = size;
        res->blocks++;
        res->bytes += size;
    }
    for (size_t k = 0; k < SLOTS; k++) free(slot[k]);
    free(slot);
    free(len);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) steps = atol(argv[2]);
    if (threads < 1 || threads > 256 || steps < 1) {
        fprintf(stderr, "usage: malloc_thread [threads 1-256] [steps per thread]\n");
        return 2;
    }
    pthread_t t[256];
    struct result res[256] = {{0, 0, 0, 0}};
    for (int i = 0; i < threads; i++) {
        res[i].id = (uint64_t)i;
        if (pthread_create(&t[i], NULL, loop, &res[i]) != 0) return 1;
    }
    uint64_t blocks = 0, bytes = 0, sum = 0;
    int bad = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
        blocks += res[i].blocks;
        bytes += res[i].bytes;
        sum += res[i].sum;
    }
    printf("malloc-thread threads %d blocks %llu bytes %llu checksum %llu\n", threads,
           (unsigned long long)blocks, (unsigned long long)bytes, (unsigned long long)sum);
    return bad;
}
