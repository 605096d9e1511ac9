/* malloc-simple: a single-thread small-block loop, written for `bench-harness c-programs` from
 * the description of glibc's bench-malloc-simple: for each block size of 16..256 bytes and each
 * batch of 25..1600 blocks, allocate the batch, touch every block, free it, and repeat.
 * Usage: malloc_simple [threads] [repetitions]. The loop runs on the main thread alone (the
 * threads argument is accepted like the other programs' and ignored). Prints the blocks
 * allocated and a checksum of the bytes read back. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static const size_t SIZES[] = {16, 32, 64, 128, 256};
static const size_t COUNTS[] = {25, 100, 400, 1600};

int main(int argc, char **argv) {
    long reps = argc > 2 ? atol(argv[2]) : 2000;
    if (reps < 1) {
        fprintf(stderr, "usage: malloc_simple [threads] [repetitions >= 1]\n");
        return 2;
    }
    unsigned char **blk = malloc(1600 * sizeof *blk);
    if (!blk) return 1;
    uint64_t blocks = 0, sum = 0;
    for (long r = 0; r < reps; r++) {
        for (size_t s = 0; s < sizeof SIZES / sizeof *SIZES; s++) {
            for (size_t c = 0; c < sizeof COUNTS / sizeof *COUNTS; c++) {
                size_t size = SIZES[s], n = COUNTS[c];
                for (size_t i = 0; i < n; i++) {
                    blk[i] = malloc(size);
                    if (!blk[i]) return 1;
                    blk[i][0] = (unsigned char)(i + r);
                    blk[i][size - 1] = (unsigned char)size;
                }
                for (size_t i = 0; i < n; i++) {
                    sum += blk[i][0] + blk[i][size - 1];
                    free(blk[i]);
                }
                blocks += n;
            }
        }
    }
    free(blk);
    printf("malloc-simple blocks %llu checksum %llu\n", (unsigned long long)blocks,
           (unsigned long long)sum);
    return 0;
}
