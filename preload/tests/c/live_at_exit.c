/* Counters test program: allocates 20,000 blocks of 1,000 bytes, frees every other one, and
 * exits with the other 10,000 (10,000,000 bytes) still live. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 20000
#define BLOCK 1000

static void *keep[N];

int main(void) {
    for (int i = 0; i < N; i++) {
        keep[i] = malloc(BLOCK);
        if (!keep[i]) return 1;
        memset(keep[i], i, BLOCK);
    }
    for (int i = 0; i < N; i += 2) {
        free(keep[i]);
        keep[i] = NULL;
    }
    printf("done\n");
    return 0;
}
