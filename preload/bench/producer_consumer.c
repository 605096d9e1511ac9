/* A larson/xmalloc-like cross-thread benchmark for `bench-harness c-programs`: PAIRS producer
 * threads each allocate BATCHES batches of 256 blocks (16..512 bytes, one in 32 up to 8 KiB),
 * fill them with a pattern and hand each batch to their consumer through a bounded queue. The
 * consumer checks every block and parks it in one of 2,000 slots, freeing the block it replaces
 * (so blocks die on another thread than the one that made them, some at once, some much later).
 * Usage: producer_consumer [pairs] [batches per producer]. Prints the number of blocks and bytes
 * checked and the number of corrupted blocks (always 0 with a correct allocator): the same line
 * under every allocator. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 256
#define QUEUE 8
#define SLOTS 2000

struct block {
    uint64_t size;
    uint64_t tag;
    unsigned char bytes[];
};

struct pair {
    int id;
    long batches;
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    struct block **queue[QUEUE];
    int head, count;
    uint64_t blocks, bytes, bad;
};

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13; *x ^= *x >> 7; *x ^= *x << 17;
    return *x;
}

static void *producer(void *arg) {
    struct pair *p = arg;
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(p->id + 1);
    for (long b = 0; b < p->batches; b++) {
        struct block **batch = malloc(BATCH * sizeof *batch);
        for (int i = 0; i < BATCH; i++) {
            uint64_t r = next(&x);
            size_t size = r % 32 == 0 ? 16 + (r >> 8) % 8177 : 16 + (r >> 8) % 497;
            struct block *blk = malloc(sizeof *blk + size);
            blk->size = size;
            blk->tag = r;
            memset(blk->bytes, (int)(r & 0xff), size);
            batch[i] = blk;
        }
        pthread_mutex_lock(&p->lock);
        while (p->count == QUEUE) pthread_cond_wait(&p->not_full, &p->lock);
        p->queue[(p->head + p->count) % QUEUE] = batch;
        p->count++;
        pthread_cond_signal(&p->not_empty);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

static int intact(const struct block *blk) {
    unsigned char want = (unsigned char)(blk->tag & 0xff);
    return blk->bytes[0] == want && blk->bytes[blk->size / 2] == want && blk->bytes[blk->size - 1] == want;
}

static void *consumer(void *arg) {
    struct pair *p = arg;
    struct block **slot = calloc(SLOTS, sizeof *slot);
    uint64_t x = 0xD1B54A32D192ED03ull * (uint64_t)(p->id + 1);
    for (long b = 0; b < p->batches; b++) {
        pthread_mutex_lock(&p->lock);
        while (p->count == 0) pthread_cond_wait(&p->not_empty, &p->lock);
        struct block **batch = p->queue[p->head];
        p->head = (p->head + 1) % QUEUE;
        p->count--;
        pthread_cond_signal(&p->not_full);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < BATCH; i++) {
            struct block *blk = batch[i];
            p->blocks++;
            p->bytes += blk->size;
            if (!intact(blk)) p->bad++;
            /* Half the blocks die at once; the others replace a random parked one. */
            uint64_t r = next(&x);
            if (r & 1) {
                free(blk);
            } else {
                size_t k = (r >> 1) % SLOTS;
                if (slot[k] && !intact(slot[k])) p->bad++;
                free(slot[k]);
                slot[k] = blk;
            }
        }
        free(batch);
    }
    for (size_t k = 0; k < SLOTS; k++) {
        if (slot[k] && !intact(slot[k])) p->bad++;
        free(slot[k]);
    }
    free(slot);
    return NULL;
}

int main(int argc, char **argv) {
    int pairs = argc > 1 ? atoi(argv[1]) : 2;
    long batches = argc > 2 ? atol(argv[2]) : 2000;
    if (pairs < 1 || pairs > 32 || batches < 1) return 2;
    struct pair *p = calloc((size_t)pairs, sizeof *p);
    pthread_t *t = calloc(2 * (size_t)pairs, sizeof *t);
    for (int i = 0; i < pairs; i++) {
        p[i].id = i;
        p[i].batches = batches;
        pthread_mutex_init(&p[i].lock, NULL);
        pthread_cond_init(&p[i].not_full, NULL);
        pthread_cond_init(&p[i].not_empty, NULL);
        pthread_create(&t[2 * i], NULL, producer, &p[i]);
        pthread_create(&t[2 * i + 1], NULL, consumer, &p[i]);
    }
    uint64_t blocks = 0, bytes = 0, bad = 0;
    for (int i = 0; i < pairs; i++) {
        pthread_join(t[2 * i], NULL);
        pthread_join(t[2 * i + 1], NULL);
        blocks += p[i].blocks;
        bytes += p[i].bytes;
        bad += p[i].bad;
    }
    printf("blocks %llu bytes %llu corrupted %llu\n", (unsigned long long)blocks,
           (unsigned long long)bytes, (unsigned long long)bad);
    free(t);
    free(p);
    return bad != 0;
}
