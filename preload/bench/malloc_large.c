/* malloc-large: large blocks, written for `bench-harness c-programs` from the description of the
 * malloc-large benchmark: blocks of 5-25 MiB, 20 live in all (split between the threads), each
 * filled with memset right after malloc, a random one replaced per step. Fresh memory costs a
 * page fault per page; an allocator that reuses recently freed large blocks saves them.
 * Usage: malloc_large [threads] [steps per thread]. Prints the blocks and MiB allocated and a
 * checksum of bytes read back before each free. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 20
#define MIB ((size_t)1 << 20)

static long steps = 300;
static int threads = 2;

struct result { uint64_t id, blocks, bytes, sum; };

static void *loop(void *arg) {
    struct result *res = arg;
    uint64_t x = 0x9E3779B97F4A7C15ull * (res->id + 1);
    int live = LIVE / threads > 0 ? LIVE / threads : 1;
    unsigned char *slot[LIVE] = {0};
    size_t len[LIVE] = {0};
    for (long i = 0; i < steps; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = (int)(x % (uint64_t)live);
        if (slot[k]) {
            res->sum += slot[k][0] + slot[k][len[k] / 2] + slot[k][len[k] - 1];
            free(slot[k]);
        }
        size_t size = 5 * MIB + (x >> 16) % (20 * MIB + 1);
        slot[k] = malloc(size);
        if (!slot[k]) return (void *)1;
        memset(slot[k], (int)(i & 0xff), size);
        len[k] = size;
        res->blocks++;
        res->bytes += size;
    }
    for (int k = 0; k < live; k++) free(slot[k]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) threads = atoi(argv[1]);
    if (argc > 2) steps = atol(argv[2]);
    if (threads < 1 || threads > LIVE || steps < 1) {
        fprintf(stderr, "usage: malloc_large [threads 1-%d] [steps per thread]\n", LIVE);
        return 2;
    }
    pthread_t t[LIVE];
    struct result res[LIVE];
    memset(res, 0, sizeof res);
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
    printf("malloc-large threads %d blocks %llu MiB %llu checksum %llu\n", threads,
           (unsigned long long)blocks, (unsigned long long)(bytes / MIB), (unsigned long long)sum);
    return bad;
}
