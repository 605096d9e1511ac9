/* larson: a server's churn, written for `bench-harness c-programs` from the published description
 * of Larson and Krishnan's benchmark. THREADS lineages each own an array of SLOTS blocks; a
 * lineage runs ROUNDS rounds, each on a NEW thread: the thread frees a random slot and mallocs a
 * new block of 8..1000 bytes into it, OPS times, then starts its successor with the slots and
 * exits. So most blocks are freed by another thread than the one that allocated them, and
 * threads are created and retired all the time.
 * Usage: larson [threads] [rounds] [ops per round]. Prints the blocks and bytes allocated, a
 * checksum of the tags read back on free, and the number of damaged blocks (always 0): the same
 * line under every allocator. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 4000

struct lineage {
    uint64_t rng, blocks, bytes, sum, bad;
    long round;
    uint64_t *slot[SLOTS];
};

static long rounds = 2000, ops = 2000;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int running;
static int failed;

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13; *x ^= *x >> 7; *x ^= *x << 17;
    return *x;
}

static void *round_of(void *arg) {
    struct lineage *l = arg;
    for (long i = 0; i < ops; i++) {
        uint64_t r = next(&l->rng);
        size_t k = r % SLOTS;
        uint64_t *old = l->slot[k];
        if (old) {
            /* The tag written at malloc time: the slot index, the size, a check word. */
            if ((old[0] & 0xffff) != k) l->bad++;
            l->sum += old[0];
            free(old);
        }
        size_t size = 8 + (r >> 24) % 993;
        uint64_t *b = malloc(size);
        if (!b) { l->bad++; l->slot[k] = NULL; continue; }
        b[0] = (uint64_t)k | (uint64_t)size << 16 | (r >> 48) << 32;
        ((unsigned char *)b)[size - 1] = (unsigned char)r;
        l->slot[k] = b;
        l->blocks++;
        l->bytes += size;
    }
    l->round++;
    if (l->round < rounds) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, round_of, l) == 0) {
            pthread_attr_destroy(&attr);
            return NULL;
        }
        pthread_attr_destroy(&attr);
        pthread_mutex_lock(&lock);
        failed = 1;
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    running--;
    pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) rounds = atol(argv[2]);
    if (argc > 3) ops = atol(argv[3]);
    if (threads < 1 || threads > 256 || rounds < 1 || ops < 1) {
        fprintf(stderr, "usage: larson [threads 1-256] [rounds] [ops per round]\n");
        return 2;
    }
    struct lineage *l = calloc((size_t)threads, sizeof *l);
    if (!l) return 1;
    running = threads;
    for (int i = 0; i < threads; i++) {
        l[i].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, round_of, &l[i]) != 0) {
            fprintf(stderr, "larson: cannot create a thread\n");
            return 1;
        }
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_lock(&lock);
    while (running > 0) pthread_cond_wait(&done_cv, &lock);
    pthread_mutex_unlock(&lock);
    if (failed) {
        fprintf(stderr, "larson: cannot create a thread\n");
        return 1;
    }
    uint64_t blocks = 0, bytes = 0, sum = 0, bad = 0;
    for (int i = 0; i < threads; i++) {
        for (size_t k = 0; k < SLOTS; k++) {
            if (l[i].slot[k] && (l[i].slot[k][0] & 0xffff) != k) l[i].bad++;
            free(l[i].slot[k]);
        }
        blocks += l[i].blocks;
        bytes += l[i].bytes;
        sum += l[i].sum;
        bad += l[i].bad;
    }
    free(l);
    printf("larson threads %d blocks %llu bytes %llu tags %llu damaged %llu\n", threads,
           (unsigned long long)blocks, (unsigned long long)bytes, (unsigned long long)sum,
           (unsigned long long)bad);
    return bad != 0;
}
