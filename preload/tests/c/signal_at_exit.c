/* Threads exit while a timer signal whose handler allocates keeps arriving. The allocators'
 * thread-exit hooks take allocator locks; a handler that allocates, run on a thread while its
 * hook holds such a lock, would wait for that lock forever. Each thread fills its cache with
 * blocks of several sizes (so its hook has work to do) and lets the signal in only once it is
 * done allocating: from then on the handler runs in the thread's teardown, its exit hooks
 * included, and never inside an allocator call of the thread's own (which is not promised).
 * Prints how many threads ran and whether any signal was handled.
 * Usage: signal_at_exit [threads] */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static volatile sig_atomic_t handled;

static void handler(int sig) {
    (void)sig;
    size_t n = 48 + (size_t)(handled % 64) * 24;
    char *p = malloc(n);
    if (p) {
        memset(p, 1, n);
        free(p);
    }
    handled = handled + 1;
}

static void *work(void *arg) {
    (void)arg;
    enum { N = 200 };
    void *blocks[N];
    for (int i = 0; i < N; i++) blocks[i] = malloc((size_t)16 << (i % 8));
    for (int i = 0; i < N; i++) free(blocks[i]);
    sigset_t alarm;
    sigemptyset(&alarm);
    sigaddset(&alarm, SIGALRM);
    pthread_sigmask(SIG_UNBLOCK, &alarm, NULL);
    return NULL;
}

int main(int argc, char **argv) {
    long threads = argc > 1 ? atol(argv[1]) : 4000;
    /* Blocked in the main thread and, inherited, in every new one until it is done allocating. */
    sigset_t alarm;
    sigemptyset(&alarm);
    sigaddset(&alarm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alarm, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGALRM, &sa, NULL) != 0) return 1;
    struct itimerval every = {{0, 20}, {0, 20}};
    if (setitimer(ITIMER_REAL, &every, NULL) != 0) return 1;
    for (long i = 0; i < threads; i += 4) {
        pthread_t t[4];
        for (int k = 0; k < 4; k++)
            if (pthread_create(&t[k], NULL, work, NULL) != 0) return 1;
        for (int k = 0; k < 4; k++) pthread_join(t[k], NULL);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("threads %ld signals %s\n", threads, handled > 0 ? "handled" : "none");
    return 0;
}
