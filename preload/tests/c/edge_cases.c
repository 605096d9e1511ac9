/* Edge cases of the C allocation interface, checked against glibc's semantics.
 * Run natively (glibc) and under each LD_PRELOAD library; prints one line per check and exits 1
 * if any failed. Checks glibc does not share (foreign pointers, C17 aligned_alloc) run only when
 * malloc is interposed by a *_preload.so. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* Using a block after a failed realloc, or foreign memory after free, is the point here. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

static int failures = 0;
/* Volatile so the compiler neither warns about nor folds the huge requests. */
static volatile size_t huge = SIZE_MAX;
static volatile size_t over_ptrdiff = (size_t)PTRDIFF_MAX + 1;

static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    if (!ok) failures++;
}

static int aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static int all_bytes(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

static void fill_pattern(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 3);
}

static int has_pattern(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 7 + 3)) return 0;
    return 1;
}

static volatile int spinning = 1;
static void *allocate_in_loop(void *arg) {
    (void)arg;
    while (spinning) {
        void *p = malloc(64 + (rand() & 1023));
        free(p);
    }
    return NULL;
}

int main(void) {
    /* Which library serves malloc? */
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    int preloaded = m && dladdr(m, &info) && info.dli_fname && strstr(info.dli_fname, "_preload.so");
    printf("info malloc from %s\n", preloaded ? info.dli_fname : "libc");

    /* malloc(0): a unique pointer; free(NULL): nothing. */
    void *z1 = malloc(0), *z2 = malloc(0);
    check(z1 && z2 && z1 != z2, "malloc(0) returns unique pointers");
    free(z1);
    free(z2);
    free(NULL);
    check(1, "free(NULL) does nothing");

    /* Alignment of plain malloc. */
    int all16 = 1;
    void *blocks[300];
    for (int i = 0; i < 300; i++) {
        blocks[i] = malloc((size_t)i + 1);
        if (!blocks[i] || !aligned(blocks[i], 16)) all16 = 0;
        else memset(blocks[i], i, (size_t)i + 1);
    }
    int intact = 1;
    for (int i = 0; i < 300; i++) {
        if (blocks[i] && !all_bytes(blocks[i], (size_t)i + 1, (unsigned char)i)) intact = 0;
        free(blocks[i]);
    }
    check(all16, "malloc(1..300) is 16-byte aligned");
    check(intact, "300 live blocks do not overlap");

    /* Failures: NULL and ENOMEM. */
    errno = 0;
    check(malloc(huge) == NULL && errno == ENOMEM, "malloc(SIZE_MAX) is NULL with ENOMEM");
    errno = 0;
    check(malloc(over_ptrdiff) == NULL && errno == ENOMEM, "malloc(PTRDIFF_MAX + 1) is NULL with ENOMEM");
    errno = 0;
    check(calloc(huge / 2, 3) == NULL && errno == ENOMEM, "calloc overflow is NULL with ENOMEM");
    errno = 0;
    check(calloc(1, huge) == NULL && errno == ENOMEM, "calloc(1, huge) is NULL with ENOMEM");

    /* calloc zeroes recycled memory. */
    for (int round = 0; round < 4; round++) {
        size_t n = round < 2 ? 1000 : (size_t)3 << 20;
        unsigned char *d = malloc(n);
        memset(d, 0xEE, n);
        free(d);
        unsigned char *c = calloc(n, 1);
        if (!c || !all_bytes(c, n, 0)) { check(0, "calloc returns zeros after a free"); break; }
        free(c);
        if (round == 3) check(1, "calloc returns zeros after a free");
    }
    unsigned char *c0 = calloc(0, 8);
    check(c0 != NULL, "calloc(0, 8) returns a pointer");
    free(c0);

    /* realloc. */
    unsigned char *r = realloc(NULL, 100);
    check(r != NULL, "realloc(NULL, n) allocates");
    fill_pattern(r, 100);
    int kept = 1;
    size_t sizes[] = {10000, 5u << 20, 9u << 20, 100, 3000, 50};
    size_t have = 100;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        r = realloc(r, sizes[i]);
        if (!r) { kept = 0; break; }
        size_t keep = have < sizes[i] ? have : sizes[i];
        if (!has_pattern(r, keep)) kept = 0;
        fill_pattern(r, sizes[i]);
        have = sizes[i];
    }
    check(kept, "realloc keeps contents through grow, large and shrink");
    errno = 0;
    check(r && realloc(r, huge) == NULL && errno == ENOMEM && has_pattern(r, have),
          "realloc(p, SIZE_MAX) is NULL with ENOMEM, block intact");
    check(realloc(r, 0) == NULL, "realloc(p, 0) frees and returns NULL");

    /* reallocarray. */
    unsigned char *ra = reallocarray(NULL, 10, 10);
    check(ra != NULL, "reallocarray(NULL, 10, 10) allocates");
    fill_pattern(ra, 100);
    errno = 0;
    check(reallocarray(ra, huge / 2, 3) == NULL && errno == ENOMEM && has_pattern(ra, 100),
          "reallocarray overflow is NULL with ENOMEM, block intact");
    ra = reallocarray(ra, 100, 100);
    check(ra && has_pattern(ra, 100), "reallocarray grows keeping contents");
    free(ra);

    /* posix_memalign. */
    void *pm = (void *)0x1;
    check(posix_memalign(&pm, 0, 10) == EINVAL && pm == (void *)0x1, "posix_memalign align 0 is EINVAL");
    check(posix_memalign(&pm, 3, 10) == EINVAL, "posix_memalign align 3 is EINVAL");
    check(posix_memalign(&pm, 4, 10) == EINVAL, "posix_memalign align 4 (< sizeof(void*)) is EINVAL");
    check(posix_memalign(&pm, 24, 10) == EINVAL, "posix_memalign align 24 is EINVAL");
    check(posix_memalign(&pm, 64, huge) == ENOMEM && pm == (void *)0x1, "posix_memalign huge size is ENOMEM");
    size_t aligns[] = {8, 16, 64, 4096, 1u << 16, 1u << 21, 1u << 30};
    int pm_ok = 1;
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
        void *p = NULL;
        if (posix_memalign(&p, aligns[i], 100) != 0 || !p || !aligned(p, aligns[i])) { pm_ok = 0; continue; }
        memset(p, 1, 100);
        check(malloc_usable_size(p) >= 100, "malloc_usable_size of a posix_memalign block");
        free(p);
    }
    check(pm_ok, "posix_memalign 8 B .. 1 GiB alignments");
    void *pz = NULL;
    check(posix_memalign(&pz, 64, 0) == 0 && pz, "posix_memalign size 0 gives a pointer");
    free(pz);

    /* aligned_alloc, memalign, valloc, pvalloc. */
    void *aa = aligned_alloc(256, 1000);
    check(aa && aligned(aa, 256), "aligned_alloc(256, 1000) aligned");
    free(aa);
    if (preloaded) {
        errno = 0;
        check(aligned_alloc(3, 10) == NULL && errno == EINVAL, "aligned_alloc align 3 is NULL with EINVAL (C17)");
    }
    void *ma = memalign(48, 10);
    check(ma && aligned(ma, 64), "memalign(48) rounds the alignment up to 64");
    free(ma);
    errno = 0;
    check(memalign(huge / 2 + 2, 1) == NULL && errno == EINVAL, "memalign beyond SIZE_MAX/2+1 is EINVAL");
    long page = sysconf(_SC_PAGESIZE);
    void *va = valloc(10);
    check(va && aligned(va, (size_t)page), "valloc is page aligned");
    free(va);
    void *pv = pvalloc(100);
    check(pv && aligned(pv, (size_t)page) && malloc_usable_size(pv) >= (size_t)page, "pvalloc rounds to a page");
    free(pv);
    errno = 0;
    check(pvalloc(huge) == NULL && errno == ENOMEM, "pvalloc(huge) is NULL with ENOMEM");

    /* malloc_usable_size. */
    check(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) is 0");
    void *u = malloc(100);
    size_t us = malloc_usable_size(u);
    check(us >= 100, "malloc_usable_size >= size");
    memset(u, 5, us);
    free(u);

    /* A large block. */
    unsigned char *big = malloc(64u << 20);
    check(big != NULL, "malloc(64 MiB)");
    if (big) { big[0] = 1; big[(64u << 20) - 1] = 2; check(big[0] == 1 && big[(64u << 20) - 1] == 2, "64 MiB block usable"); }
    free(big);

    /* Memory the library never handed out (like the dynamic loader's early allocations). */
    if (preloaded) {
        unsigned char *foreign = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        fill_pattern(foreign, 200);
        free(foreign);
        check(has_pattern(foreign, 200), "free of foreign memory is ignored");
        check(malloc_usable_size(foreign) == 0, "malloc_usable_size of foreign memory is 0");
        unsigned char *moved = realloc(foreign, 200);
        check(moved && moved != foreign && has_pattern(moved, 200), "realloc of foreign memory copies it");
        free(moved);
        munmap(foreign, (size_t)page);
    }

    /* fork in a multithreaded program: the child can allocate. */
    pthread_t t;
    pthread_create(&t, NULL, allocate_in_loop, NULL);
    int forks_ok = 1;
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int k = 0; k < 1000; k++) {
                void *p = malloc((size_t)k * 13 + 1);
                if (!p) _exit(1);
                memset(p, 0, (size_t)k * 13 + 1);
                free(p);
            }
            _exit(0);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) forks_ok = 0;
    }
    spinning = 0;
    pthread_join(t, NULL);
    check(forks_ok, "fork with an allocating thread: the child allocates");

    printf("%s: %d failures\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
