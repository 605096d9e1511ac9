/* 8 threads in a ring: each allocates blocks (16 B .. 4 KiB, some 1-3 MiB), stamps them, and hands
 * them to the next thread, which checks the stamps, sometimes reallocs, and frees them. Every block
 * is thus freed by a thread other than the one that allocated it. Prints a checksum that must match
 * the run under glibc; exits 1 on a corrupted block. Usage: cross_thread_free [blocks per thread] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define BATCH 64

struct block {
    struct block *next;
    uint64_t owner, seq, size;
};

struct queue {
    pthread_mutex_t lock;
    struct block *head;
};

static struct queue queues[THREADS];
static long per_thread = 20000;
static uint64_t checksums[THREADS];
static int corrupt = 0;

static uint64_t size_for(uint64_t owner, uint64_t seq) {
    uint64_t x = (owner + 1) * 0x9E3779B97F4A7C15ull ^ (seq * 0xBF58476D1CE4E5B9ull);
    x ^= x >> 31;
    if (x % 997 == 0) return (1u << 20) + x % (2u << 20); /* large, now and then */
    return sizeof(struct block) + 16 + x % 4000;
}

static unsigned char stamp(uint64_t owner, uint64_t seq) { return (unsigned char)(owner * 31 + seq); }

static void *worker(void *arg) {
    uint64_t me = (uint64_t)(uintptr_t)arg;
    struct queue *out = &queues[(me + 1) % THREADS];
    struct queue *in = &queues[me];
    long produced = 0, consumed = 0;
    uint64_t sum = 0;
    while (produced < per_thread || consumed < per_thread) {
        for (int i = 0; i < BATCH && produced < per_thread; i++, produced++) {
            uint64_t size = size_for(me, (uint64_t)produced);
            struct block *b = malloc(size);
            if (!b) { fprintf(stderr, "malloc failed\n"); exit(1); }
            b->owner = me;
            b->seq = (uint64_t)produced;
            b->size = size;
            memset((unsigned char *)(b + 1), stamp(me, b->seq), size - sizeof *b);
            pthread_mutex_lock(&out->lock);
            b->next = out->head;
            out->head = b;
            pthread_mutex_unlock(&out->lock);
        }
        pthread_mutex_lock(&in->lock);
        struct block *list = in->head;
        in->head = NULL;
        pthread_mutex_unlock(&in->lock);
        while (list) {
            struct block *b = list;
            list = b->next;
            unsigned char *body = (unsigned char *)(b + 1);
            size_t n = b->size - sizeof *b;
            unsigned char s = stamp(b->owner, b->seq);
            if (body[0] != s || body[n / 2] != s || body[n - 1] != s) corrupt = 1;
            sum += b->owner * 1000003u + b->seq + b->size;
            if (b->seq % 5 == 0) { /* realloc by the receiving thread, then check again */
                uint64_t keep = b->size;
                b = realloc(b, keep * 2);
                if (!b || ((unsigned char *)(b + 1))[keep - sizeof *b - 1] != s) corrupt = 1;
            }
            free(b);
            consumed++;
        }
    }
    checksums[me] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) per_thread = atol(argv[1]);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&queues[i].lock, NULL);
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    uint64_t total = 0;
    for (int i = 0; i < THREADS; i++) total += checksums[i];
    printf("blocks %ld checksum %llu %s\n", per_thread * THREADS, (unsigned long long)total,
           corrupt ? "CORRUPT" : "intact");
    return corrupt;
}
