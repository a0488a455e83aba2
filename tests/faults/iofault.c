/* LD_PRELOAD shim for the fault tests: makes I/O calls on chosen files fail with a chosen errno.
 *
 * Interposes write, pwrite, pwrite64, writev, pwritev, pwritev64, sync_file_range, fdatasync,
 * fsync, read, pread, pread64, preadv, preadv64 (the blob store appends with pwritev). A call is
 * a candidate when its fd's path (readlink /proc/self/fd/N, cached per fd and forgotten on
 * close) contains IOFAULT_PATH and its operation is named in IOFAULT_OPS (comma-separated, e.g.
 * "write,pwrite64,fdatasync"). Candidates fail only while armed: while the file IOFAULT_ARM
 * exists (always, when IOFAULT_ARM is unset). Of the armed candidates, the IOFAULT_NTH-th
 * (1-based; default 1) and the IOFAULT_COUNT-1 after it fail (IOFAULT_COUNT=0: every one from
 * the N-th on), or, with IOFAULT_PROB=p, each with probability p from a generator seeded by
 * IOFAULT_SEED. The errno is IOFAULT_ERRNO: ENOSPC, EIO or a number. Every injected failure
 * adds a line "<op> <path>" to IOFAULT_LOG when set, so the test knows the fault was reached.
 *
 * Rust's std calls these through libc's dynamic symbols, so the shim reaches the native core
 * as well as Python and RocksDB.  Build: gcc -shared -fPIC -O2 -o iofault.so iofault.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536
enum { UNKNOWN = 0, MATCH = 1, OTHER = 2 };
static unsigned char fd_state[MAX_FD];

static const char *want_path, *want_ops, *arm_file, *log_file;
static int fault_errno = EIO;
static long nth = 1, count = 1;
static double prob = -1.0;
static unsigned long long rng_state = 88172645463325252ULL;
static long armed_calls;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void setup(void) {
    want_path = getenv("IOFAULT_PATH");
    want_ops = getenv("IOFAULT_OPS");
    arm_file = getenv("IOFAULT_ARM");
    log_file = getenv("IOFAULT_LOG");
    const char *e = getenv("IOFAULT_ERRNO");
    if (e) {
        if (!strcmp(e, "ENOSPC")) fault_errno = ENOSPC;
        else if (!strcmp(e, "EIO")) fault_errno = EIO;
        else if (!strcmp(e, "EDQUOT")) fault_errno = EDQUOT;
        else fault_errno = atoi(e);
    }
    if ((e = getenv("IOFAULT_NTH"))) nth = atol(e);
    if ((e = getenv("IOFAULT_COUNT"))) count = atol(e);
    if ((e = getenv("IOFAULT_PROB"))) prob = atof(e);
    if ((e = getenv("IOFAULT_SEED"))) rng_state = strtoull(e, NULL, 10) * 2654435761ULL + 1;
}

static int op_named(const char *op) {
    if (!want_ops) return 0;
    size_t n = strlen(op);
    for (const char *p = want_ops; (p = strstr(p, op)); p += n) {
        int starts = p == want_ops || p[-1] == ',';
        int ends = p[n] == '\0' || p[n] == ',';
        if (starts && ends) return 1;
    }
    return 0;
}

static int fd_matches(int fd, char *path, size_t cap) {
    if (fd < 0 || fd >= MAX_FD) return 0;
    if (fd_state[fd] == OTHER) return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, cap - 1);
    if (n < 0) return 0;
    path[n] = '\0';
    int m = strstr(path, want_path) != NULL;
    fd_state[fd] = m ? MATCH : OTHER;
    return m;
}

static unsigned long long next_rand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* 1: this call fails (errno set). */
static int inject(const char *op, int fd) {
    pthread_once(&once, setup);
    if (!want_path || !op_named(op)) return 0;
    char path[4096];
    if (!fd_matches(fd, path, sizeof path)) return 0;
    if (arm_file) {
        struct stat st;
        if (stat(arm_file, &st) != 0) return 0;
    }
    int fail;
    pthread_mutex_lock(&mu);
    long k = ++armed_calls;
    if (prob >= 0.0) fail = (double)(next_rand() >> 11) / (double)(1ULL << 53) < prob;
    else fail = k >= nth && (count == 0 || k < nth + count);
    if (fail && log_file) {
        int saved = errno;
        FILE *f = fopen(log_file, "a");
        if (f) {
            fprintf(f, "%s %s\n", op, path);
            fclose(f);
        }
        errno = saved;
    }
    pthread_mutex_unlock(&mu);
    if (fail) errno = fault_errno;
    return fail;
}

#define REAL(name) static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    if (inject("write", fd)) return -1;
    return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    if (inject("pwrite", fd)) return -1;
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    REAL(pwrite64);
    if (inject("pwrite64", fd)) return -1;
    return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev);
    if (inject("writev", fd)) return -1;
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev);
    if (inject("pwritev", fd)) return -1;
    return real_pwritev(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    REAL(pwritev64);
    if (inject("pwritev64", fd)) return -1;
    return real_pwritev64(fd, iov, cnt, off);
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
    REAL(sync_file_range);
    if (inject("sync_file_range", fd)) return -1;
    return real_sync_file_range(fd, off, n, flags);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    if (inject("fdatasync", fd)) return -1;
    return real_fdatasync(fd);
}

int fsync(int fd) {
    REAL(fsync);
    if (inject("fsync", fd)) return -1;
    return real_fsync(fd);
}

ssize_t read(int fd, void *buf, size_t n) {
    REAL(read);
    if (inject("read", fd)) return -1;
    return real_read(fd, buf, n);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off) {
    REAL(pread);
    if (inject("pread", fd)) return -1;
    return real_pread(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off64_t off) {
    REAL(pread64);
    if (inject("pread64", fd)) return -1;
    return real_pread64(fd, buf, n, off);
}

ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(preadv);
    if (inject("preadv", fd)) return -1;
    return real_preadv(fd, iov, cnt, off);
}

ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    REAL(preadv64);
    if (inject("preadv64", fd)) return -1;
    return real_preadv64(fd, iov, cnt, off);
}

int close(int fd) {
    REAL(close);
    if (fd >= 0 && fd < MAX_FD) fd_state[fd] = UNKNOWN;
    return real_close(fd);
}
