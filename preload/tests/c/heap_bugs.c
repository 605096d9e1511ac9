/* One heap bug, named by the first argument, committed through the C interface: a hardened
 * preload library must stop the program with its report (SIGABRT). Exits 0 if nothing stopped it. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Called through a volatile pointer: the compiler may not drop stores to a block freed next. */
static void *(*volatile fill)(void *, int, size_t) = memset;

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: heap_bugs double-free|overflow\n");
        return 2;
    }
    char *keep = malloc(24);
    char *p = malloc(24);
    if (!keep || !p) return 3;
    if (strcmp(argv[1], "double-free") == 0) {
        free(p);
        free(p);
    } else if (strcmp(argv[1], "overflow") == 0) {
        /* Eight bytes past what the block may hold: where a canary lies. */
        fill(p, 0x41, malloc_usable_size(p) + 8);
        free(p);
    } else {
        return 2;
    }
    free(keep);
    printf("not stopped\n");
    return 0;
}
