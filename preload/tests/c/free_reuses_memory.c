/* free() really frees, for every way of allocating: for each size (tiny to directly mapped), a
 * loop allocates a block (malloc, calloc, aligned_alloc, posix_memalign or realloc from NULL, in
 * turn), writes all of it and frees it, enough times that a free that did nothing would leak at
 * least 16 MiB. Peak RSS must grow by less than 8 MiB per size. Prints PASSED or FAIL lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Called through a volatile pointer, so the compiler cannot drop the memset before it as dead. */
static void (*volatile release)(void *) = free;

static long peak_rss_kib(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

static void *allocate(size_t size, long i) {
    void *p = NULL;
    switch (i % 5) {
    case 0: return malloc(size);
    case 1: return calloc(1, size);
    case 2: return aligned_alloc(64, (size + 63) / 64 * 64);
    case 3: return posix_memalign(&p, 4096, size) == 0 ? p : NULL;
    default: return realloc(NULL, size);
    }
}

int main(void) {
    static const size_t sizes[] = {1, 24, 100, 1000, 4000, 16384, 65528, 300000, 1 << 20, 3 << 20};
    int failures = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t size = sizes[s];
        /* Enough pairs that leaking every block would keep at least 16 MiB written. */
        size_t footprint = size < 16 ? 16 : size;
        long iters = (long)((64u << 20) / footprint);
        if (iters > (1 << 20)) iters = 1 << 20;
        if (iters < 32) iters = 32;
        long before = peak_rss_kib();
        for (long i = 0; i < iters; i++) {
            char *p = allocate(size, i);
            if (!p) {
                printf("FAIL size %zu: allocation %ld returned NULL\n", size, i);
                return 1;
            }
            memset(p, (int)i, size);
            release(p);
        }
        long grown = peak_rss_kib() - before;
        if (grown > 8 * 1024) {
            printf("FAIL size %zu: peak RSS grew by %ld KiB over %ld allocate/free pairs\n", size,
                   grown, iters);
            failures++;
        } else {
            printf("ok size %zu\n", size);
        }
    }
    free(NULL);
    printf(failures ? "FAILED\n" : "PASSED\n");
    return 0;
}
