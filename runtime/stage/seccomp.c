/* cvbench-seccomp: compiles one container's seccomp profile to classic BPF
 * with libseccomp, in its own process, while the parent and the C stage do
 * the rest of the start.
 *
 * Why a process of its own: from Python the same compile is ~870 ctypes
 * calls, each giving up and taking back the GIL, and the spawning thread
 * holds the GIL most of that time; here it is one process on the other core,
 * with no interpreter in the way.  The calls are runtime/seccomp.py's
 * compile_bpf() calls (seccomp_init, seccomp_arch_add for every non-native
 * architecture, one seccomp_rule_add_array per syscall name, then
 * seccomp_export_bpf), except that the rules are added in the order of
 * their syscall numbers (stable: rules for one syscall keep their order),
 * which libseccomp turns into the very same bytes a little faster
 * (tests/test_runtime_seccomp.py checks both against pyseccomp's).  Nothing
 * is cached: one compile per start, as crun 1.8.1 here does (its checksum
 * cache is compiled out of this build: no .cache/seccomp appears).
 *
 * stdin (runtime/seccomp.py's encode()): all little-endian,
 *   u32 default action, u32 n_arches, n_arches x str, u32 n_rules, then per
 *   rule: u32 action, u32 nargs, nargs x (u32 arg, u32 op, u64 a, u64 b), str
 *   where str is a u32 length and that many bytes.
 * argv[1]: the fd the filter goes to, as the stage reads it: u32 length in
 *   bytes and the program; length 0 when compiling failed.
 * stdout: one line per unknown syscall name ("W<name>"), or "E<why>" on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* libseccomp 2.5's ABI (seccomp.h is in libseccomp-dev, not installed) */
struct scmp_arg_cmp { unsigned int arg; int op; uint64_t datum_a, datum_b; };
extern void *seccomp_init(uint32_t def_action);
extern void seccomp_release(void *ctx);
extern uint32_t seccomp_arch_native(void);
extern uint32_t seccomp_arch_resolve_name(const char *arch_name);
extern int seccomp_arch_add(void *ctx, uint32_t arch_token);
extern int seccomp_syscall_resolve_name(const char *name);
extern int seccomp_rule_add_array(void *ctx, uint32_t action, int syscall, unsigned int arg_cnt,
                                  const struct scmp_arg_cmp *arg_array);
extern int seccomp_export_bpf(const void *ctx, int fd);

static int out_fd = -1;

static void die(const char *why, int err)
{
    uint32_t zero = 0;
    if (out_fd >= 0 && write(out_fd, &zero, sizeof zero) < 0)
        err = errno;
    printf("E%s: %s\n", why, strerror(err));
    fflush(stdout);
    exit(1);
}

static unsigned char *in;
static size_t in_len, in_pos;

static uint64_t get(size_t n)
{
    uint64_t v = 0;
    if (in_len - in_pos < n)
        die("cvbench-seccomp: truncated input", EINVAL);
    for (size_t i = n; i-- > 0; )
        v = (v << 8) | in[in_pos + i];
    in_pos += n;
    return v;
}

static char *get_str(void)
{
    size_t n = (size_t)get(4);
    if (in_len - in_pos < n)
        die("cvbench-seccomp: truncated input", EINVAL);
    char *s = malloc(n + 1);
    if (!s)
        die("malloc", ENOMEM);
    memcpy(s, in + in_pos, n);
    s[n] = 0;
    in_pos += n;
    return s;
}

struct rule {
    uint32_t action;
    unsigned nargs;
    struct scmp_arg_cmp args[6];
    char *name;
    int nr;
    size_t index;
};

static int by_syscall(const void *a, const void *b)
{
    const struct rule *x = a, *y = b;
    if (x->nr != y->nr)
        return x->nr < y->nr ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;  /* stable */
}

int main(int argc, char **argv)
{
    if (argc != 2)
        die("usage: cvbench-seccomp OUT_FD < profile", EINVAL);
    out_fd = atoi(argv[1]);
    size_t cap = 65536;
    in = malloc(cap);
    for (ssize_t r; in && (r = read(0, in + in_len, cap - in_len)) != 0; ) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read", errno);
        }
        in_len += (size_t)r;
        if (in_len == cap)
            in = realloc(in, cap *= 2);
    }
    if (!in)
        die("malloc", ENOMEM);

    uint32_t def = (uint32_t)get(4);
    void *ctx = seccomp_init(def);
    if (!ctx)
        die("seccomp_init: libseccomp refused the default action", EINVAL);
    uint32_t native = seccomp_arch_native();
    for (uint32_t i = 0, n = (uint32_t)get(4); i < n; i++) {
        uint32_t arch = seccomp_arch_resolve_name(get_str());
        if (arch && arch != native)
            seccomp_arch_add(ctx, arch);  /* refused for an arch this host cannot run: harmless */
    }
    size_t n = (size_t)get(4);
    struct rule *rules = calloc(n ? n : 1, sizeof *rules);
    if (!rules)
        die("malloc", ENOMEM);
    for (size_t i = 0; i < n; i++) {
        struct rule *r = &rules[i];
        r->action = (uint32_t)get(4);
        r->nargs = (unsigned)get(4);
        if (r->nargs > 6)
            die("cvbench-seccomp: more than 6 argument comparisons", EINVAL);
        for (unsigned j = 0; j < r->nargs; j++) {
            r->args[j].arg = (unsigned)get(4);
            r->args[j].op = (int)get(4);
            r->args[j].datum_a = get(8);
            r->args[j].datum_b = get(8);
        }
        r->name = get_str();
        r->nr = seccomp_syscall_resolve_name(r->name);
        r->index = i;
    }
    qsort(rules, n, sizeof *rules, by_syscall);
    for (size_t i = 0; i < n; i++)
        if (seccomp_rule_add_array(ctx, rules[i].action, rules[i].nr, rules[i].nargs, rules[i].args) < 0)
            printf("W%s\n", rules[i].name);

    int mfd = memfd_create("cvbench-seccomp", MFD_CLOEXEC);
    if (mfd < 0)
        die("memfd_create", errno);
    int rc = seccomp_export_bpf(ctx, mfd);
    if (rc < 0)
        die("seccomp_export_bpf", -rc);
    struct stat st;
    if (fstat(mfd, &st) != 0)
        die("fstat", errno);
    uint32_t len = (uint32_t)st.st_size;
    unsigned char *buf = malloc(sizeof len + len);
    if (!buf)
        die("malloc", ENOMEM);
    memcpy(buf, &len, sizeof len);
    if (pread(mfd, buf + sizeof len, len, 0) != (ssize_t)len)
        die("read the exported filter", errno ? errno : EIO);
    for (size_t done = 0, total = sizeof len + len; done < total; ) {
        ssize_t w = write(out_fd, buf + done, total - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            exit(1);   /* the stage died first (EPIPE): the spawn reports that */
        done += (size_t)w;
    }
    seccomp_release(ctx);
    fflush(stdout);
    return 0;
}
