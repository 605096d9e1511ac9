/* xmalloc: producers and consumers, written for `bench-harness c-programs` from the description
 * of Lever and Boreham's xmalloc-test: producer threads allocate 64-byte objects in batches of
 * 128 and push each batch onto a shared bounded queue; consumer threads pop batches, read every
 * object and free it, so every object dies on another thread than the one that made it.
 * Half the threads produce, half consume (at least one of each).
 * Usage: xmalloc [threads] [batches per producer]. Prints the objects freed and a checksum of
 * their contents: the same line under every allocator. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 128
#define QUEUE 64
#define OBJECT 64

struct batch { uint64_t *obj[BATCH]; };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static struct batch *queue[QUEUE];
static int head, count, producers_left;
static long batches = 100000;

struct consumer_result { uint64_t objects, sum; };

static void *produce(void *arg) {
    uint64_t id = (uintptr_t)arg;
    for (long b = 0; b < batches; b++) {
        struct batch *bt = malloc(sizeof *bt);
        if (!bt) abort();
        for (int i = 0; i < BATCH; i++) {
            uint64_t *o = malloc(OBJECT);
            if (!o) abort();
            o[0] = id << 40 | (uint64_t)b << 8 | (uint64_t)i;
            o[OBJECT / 8 - 1] = o[0] ^ 0xA5A5A5A5A5A5A5A5ull;
            bt->obj[i] = o;
        }
        pthread_mutex_lock(&lock);
        while (count == QUEUE) pthread_cond_wait(&not_full, &lock);
        queue[(head + count) % QUEUE] = bt;
        count++;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    producers_left--;
    pthread_cond_broadcast(&not_empty);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *consume(void *arg) {
    struct consumer_result *res = arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (count == 0 && producers_left > 0) pthread_cond_wait(&not_empty, &lock);
        if (count == 0) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        struct batch *bt = queue[head];
        head = (head + 1) % QUEUE;
        count--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&lock);
        for (int i = 0; i < BATCH; i++) {
            uint64_t *o = bt->obj[i];
            if ((o[0] ^ 0xA5A5A5A5A5A5A5A5ull) == o[OBJECT / 8 - 1]) res->sum += o[0];
            res->objects++;
            free(o);
        }
        free(bt);
    }
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) batches = atol(argv[2]);
    if (threads < 1 || threads > 256 || batches < 1) {
        fprintf(stderr, "usage: xmalloc [threads 1-256] [batches per producer]\n");
        return 2;
    }
    int producers = threads / 2 > 0 ? threads / 2 : 1;
    int consumers = threads - producers > 0 ? threads - producers : 1;
    producers_left = producers;
    pthread_t t[512];
    struct consumer_result res[256];
    memset(res, 0, sizeof res);
    for (int i = 0; i < producers; i++)
        if (pthread_create(&t[i], NULL, produce, (void *)(uintptr_t)i) != 0) return 1;
    for (int i = 0; i < consumers; i++)
        if (pthread_create(&t[producers + i], NULL, consume, &res[i]) != 0) return 1;
    uint64_t objects = 0, sum = 0;
    for (int i = 0; i < producers + consumers; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < consumers; i++) {
        objects += res[i].objects;
        sum += res[i].sum;
    }
    printf("xmalloc producers %d consumers %d objects %llu checksum %llu\n", producers, consumers,
           (unsigned long long)objects, (unsigned long long)sum);
    return 0;
}
