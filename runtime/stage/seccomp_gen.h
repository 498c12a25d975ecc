/* cvbench-seccomp's own generator of libseccomp 2.5.4's BPF (seccomp_gen.c). */
#ifndef CVBENCH_SECCOMP_GEN_H
#define CVBENCH_SECCOMP_GEN_H
#include <stddef.h>
#include <stdint.h>

/* libseccomp 2.5's ABI (seccomp.h is in libseccomp-dev, not installed) */
struct scmp_arg_cmp { unsigned int arg; int op; uint64_t datum_a, datum_b; };

struct gen_rule {
    uint32_t action;
    unsigned nargs;
    struct scmp_arg_cmp args[6];
    char *name;
    int nr;          /* the native (x86_64) number, as seccomp_syscall_resolve_name gives it */
    size_t index;
};

/* The program libseccomp would export for seccomp_init(def_action), the
 * architectures added in this order and the rules added in this order
 * (rules with nr -1, unknown names, are refused by libseccomp and left out).
 * 0 and the program in *out (malloc'd, *out_len bytes); -1 and *why when the
 * profile is outside what it reproduces exactly, or on ENOMEM. */
int gen_bpf(uint32_t def_action, const uint32_t *arch_tokens, unsigned n_arches, const struct gen_rule *rules,
            size_t n_rules, unsigned char **out, size_t *out_len, const char **why);
#endif
