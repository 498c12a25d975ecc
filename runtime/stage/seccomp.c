/* cvbench-seccomp: compiles one container's seccomp profile to classic BPF,
 * in its own process, while the parent and the C stage do the rest of the
 * start.
 *
 * Why a process of its own: from Python the same compile is ~870 ctypes
 * calls, each giving up and taking back the GIL, and the spawning thread
 * holds the GIL most of that time; here it is one process on the other core,
 * with no interpreter in the way.
 *
 * Two compilers, one output.  seccomp_gen.c builds libseccomp 2.5.4's very
 * program (byte for byte) for the profiles it declares it reproduces, in a
 * fraction of libseccomp's time; any other profile goes through libseccomp
 * itself: seccomp_init, seccomp_arch_add for every non-native architecture,
 * one seccomp_rule_add_array per syscall name, seccomp_export_bpf, the calls
 * runtime/seccomp.py's compile_bpf() makes, in the profile's order as crun
 * makes them (the order can matter: libseccomp drops a rule it cannot merge
 * on every architecture, and the first of two plain rules for a syscall
 * wins).  tests/test_runtime_seccomp*.py check all of it against libseccomp
 * and pyseccomp.  Nothing is cached: one compile per start, as crun 1.8.1
 * here does (its checksum cache is compiled out of this build).
 *
 * stdin (runtime/seccomp.py's encode()): all little-endian,
 *   u32 default action, u32 n_arches, n_arches x str, u32 n_rules, then per
 *   rule: u32 action, u32 nargs, nargs x (u32 arg, u32 op, u64 a, u64 b), str
 *   where str is a u32 length and that many bytes.
 * argv[1]: the fd the filter goes to, as the stage reads it: u32 length in
 *   bytes and the program; length 0 when compiling failed.
 * argv[2] (optional, for tests): "libseccomp" to skip the generator, "both"
 *   to run both and fail unless they agree wherever the generator answers.
 * stdout: one line per unknown syscall name ("W<name>"), "G" or "L<why>" for
 *   the compiler used (generator, libseccomp), or "E<why>" on failure.
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

#include "seccomp_gen.h"

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

#define rule gen_rule

/* libseccomp's compile of the sorted rules; the program's length, or dies */
static size_t with_libseccomp(uint32_t def, uint32_t *arches, unsigned n_arches, struct rule *rules, size_t n,
                              unsigned char **out)
{
    void *ctx = seccomp_init(def);
    if (!ctx)
        die("seccomp_init: libseccomp refused the default action", EINVAL);
    uint32_t native = seccomp_arch_native();
    for (unsigned i = 0; i < n_arches; i++)
        if (arches[i] && arches[i] != native)
            seccomp_arch_add(ctx, arches[i]);  /* refused for an arch this host cannot run: harmless */
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
    size_t len = (size_t)st.st_size;
    if (!(*out = malloc(len ? len : 1)))
        die("malloc", ENOMEM);
    if (pread(mfd, *out, len, 0) != (ssize_t)len)
        die("read the exported filter", errno ? errno : EIO);
    close(mfd);
    seccomp_release(ctx);
    return len;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3)
        die("usage: cvbench-seccomp OUT_FD [libseccomp|both] < profile", EINVAL);
    out_fd = atoi(argv[1]);
    const char *mode = argc == 3 ? argv[2] : "";
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
    unsigned n_arches = (unsigned)get(4);
    if (n_arches > 64)
        die("cvbench-seccomp: more than 64 architectures", EINVAL);
    uint32_t arches[64];
    for (unsigned i = 0; i < n_arches; i++)
        arches[i] = seccomp_arch_resolve_name(get_str());
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

    unsigned char *prog = NULL;
    size_t len = 0;
    const char *why = "skipped (libseccomp asked for)";
    if (strcmp(mode, "libseccomp") != 0 && seccomp_arch_native() == 0xC000003Eu
        && gen_bpf(def, arches, n_arches, rules, n, &prog, &len, &why) == 0) {
        printf("G\n");
        for (size_t i = 0; i < n; i++)
            if (rules[i].nr == -1)
                printf("W%s\n", rules[i].name);
        if (!strcmp(mode, "both")) {
            unsigned char *ref;
            size_t ref_len = with_libseccomp(def, arches, n_arches, rules, n, &ref);
            if (ref_len != len || memcmp(ref, prog, len) != 0)
                die("cvbench-seccomp: the generator and libseccomp disagree", EPROTO);
        }
    } else {
        printf("L%s\n", why);
        len = with_libseccomp(def, arches, n_arches, rules, n, &prog);
    }

    uint32_t len32 = (uint32_t)len;
    unsigned char *buf = malloc(sizeof len32 + len);
    if (!buf)
        die("malloc", ENOMEM);
    memcpy(buf, &len32, sizeof len32);
    memcpy(buf + sizeof len32, prog, len);
    for (size_t done = 0, total = sizeof len32 + len; done < total; ) {
        ssize_t w = write(out_fd, buf + done, total - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            exit(1);   /* the stage died first (EPIPE): the spawn reports that */
        done += (size_t)w;
    }
    fflush(stdout);
    return 0;
}
