/* rptest: mixed sizes across threads, written for `bench-harness c-programs` from the
 * description of rpmalloc's benchmark: each thread keeps a working set of 2,000 blocks of
 * 16 B-16 KiB (small sizes far more often than large ones: the size class is drawn with
 * halving odds), replacing a random one per step; every 64 steps it hands 16 of its live blocks
 * to the next thread, which checks and frees them when it drains its inbox. A thread that has
 * done its steps keeps draining its inbox until every thread has (the live set stays the
 * program's, whichever thread the scheduler lets finish first), and an inbox holds at most
 * INBOX_MAX blocks: a thread whose peer lags that far behind (descheduled) drains its own inbox
 * and waits, as a bounded queue would, so the peak measures the allocator, not the scheduler.
 * Usage: rptest [threads] [steps per thread]. Prints the blocks and bytes allocated, the blocks
 * handed over, and the number of damaged blocks (always 0). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS 2000
#define HAND 16
#define INBOX_MAX 1024

struct block {
    struct block *next; /* inbox link */
    uint32_t size, tag;
};

struct worker {
    int id;
    long steps;
    struct worker *peer;
    pthread_mutex_t lock;
    struct block *inbox;
    int queued; /* blocks in inbox, under lock */
    uint64_t blocks, bytes, handed, bad;
};

static atomic_int finished;
static int nthreads;

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13; *x ^= *x >> 7; *x ^= *x << 17;
    return *x;
}

static size_t pick_size(uint64_t r) {
    /* Class c (0..10) with odds halving per class: 16 << c bytes at most, 16 B..16 KiB. */
    int c = 0;
    while (c < 10 && (r & 1)) { c++; r >>= 1; }
    size_t hi = (size_t)16 << c, lo = c == 0 ? 16 : hi / 2 + 1;
    return lo + (r >> 11) % (hi - lo + 1);
}

static int check(const struct block *b) {
    const unsigned char *end = (const unsigned char *)b + b->size - 1;
    return *end == (unsigned char)b->tag;
}

static void drain(struct worker *w) {
    pthread_mutex_lock(&w->lock);
    struct block *b = w->inbox;
    w->inbox = NULL;
    w->queued = 0;
    pthread_mutex_unlock(&w->lock);
    while (b) {
        struct block *n = b->next;
        if (!check(b)) w->bad++;
        free(b);
        b = n;
    }
}

static void *run(void *arg) {
    struct worker *w = arg;
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1);
    struct block **slot = calloc(SLOTS, sizeof *slot);
    if (!slot) { w->bad++; return NULL; }
    for (long i = 0; i < w->steps; i++) {
        uint64_t r = next(&x);
        size_t k = r % SLOTS;
        if (slot[k]) {
            if (!check(slot[k])) w->bad++;
            free(slot[k]);
        }
        size_t size = pick_size(next(&x));
        struct block *b = malloc(size);
        if (!b) { w->bad++; slot[k] = NULL; continue; }
        b->size = (uint32_t)size;
        b->tag = (uint32_t)r;
        memset((char *)b + sizeof *b, (int)(r & 0xff), size > 64 ? 48 : size - sizeof *b);
        ((unsigned char *)b)[size - 1] = (unsigned char)b->tag;
        slot[k] = b;
        w->blocks++;
        w->bytes += size;
        if (i % 64 == 63) {
            /* Hand HAND live blocks to the next thread, then free what others handed us. */
            struct block *list = NULL;
            for (int h = 0; h < HAND; h++) {
                size_t j = next(&x) % SLOTS;
                if (!slot[j]) continue;
                slot[j]->next = list;
                list = slot[j];
                slot[j] = NULL;
                w->handed++;
            }
            if (list) {
                struct block *tail = list;
                int n = 1;
                while (tail->next) { tail = tail->next; n++; }
                for (;;) {
                    pthread_mutex_lock(&w->peer->lock);
                    if (w->peer->queued < INBOX_MAX || w->peer == w) break;
                    pthread_mutex_unlock(&w->peer->lock);
                    drain(w);
                    sched_yield();
                }
                tail->next = w->peer->inbox;
                w->peer->inbox = list;
                w->peer->queued += n;
                pthread_mutex_unlock(&w->peer->lock);
            }
            drain(w);
        }
    }
    /* Done: keep freeing what the others hand over until they are done too, then once more
     * (a thread counts itself done only after its last hand-over). */
    atomic_fetch_add(&finished, 1);
    while (atomic_load(&finished) < nthreads) {
        drain(w);
        usleep(50);
    }
    drain(w);
    for (size_t k = 0; k < SLOTS; k++) {
        if (slot[k] && !check(slot[k])) w->bad++;
        free(slot[k]);
    }
    free(slot);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    long steps = argc > 2 ? atol(argv[2]) : 5000000;
    if (threads < 1 || threads > 256 || steps < 1) {
        fprintf(stderr, "usage: rptest [threads 1-256] [steps per thread]\n");
        return 2;
    }
    struct worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    if (!w || !t) return 1;
    nthreads = threads;
    for (int i = 0; i < threads; i++) {
        w[i].id = i;
        w[i].steps = steps;
        w[i].peer = &w[(i + 1) % threads];
        pthread_mutex_init(&w[i].lock, NULL);
    }
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, run, &w[i]) != 0) return 1;
    uint64_t blocks = 0, bytes = 0, handed = 0, bad = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        blocks += w[i].blocks;
        bytes += w[i].bytes;
        handed += w[i].handed;
        bad += w[i].bad;
    }
    printf("rptest threads %d blocks %llu bytes %llu handed %llu damaged %llu\n", threads,
           (unsigned long long)blocks, (unsigned long long)bytes, (unsigned long long)handed,
           (unsigned long long)bad);
    free(t);
    free(w);
    return bad != 0;
}
