/* The filter generator of cvbench-seccomp: libseccomp 2.5.4's BPF, byte for
 * byte, for the profiles containers are started with, without libseccomp's
 * quadratic list walks.
 *
 * Why: libseccomp needs ~12 ms for the containers-common profile on three
 * architectures (1,125 instructions), most of it spent walking its block
 * list from the tail for every jump, and translating every rule's syscall
 * number through a linear table scan per architecture.  That compile sits on
 * the start's critical path.  This file builds the same filter model
 * (per-architecture syscall lists, argument trees, priorities) and lays the
 * program out by the same rules as libseccomp's gen_bpf.c (blocks deduplicated
 * by content, pulled in from the tail, ret blocks copied and long jumps
 * inserted where a jump would exceed 255), so the output is the same program,
 * not merely an equivalent one: the syscall scenario's per-syscall filter cost
 * stays like for like with crun, which uses libseccomp.
 *
 * It only claims what it reproduces exactly (gen_bpf() says why not):
 * x86_64 with any of x86 and x32 (x86's socket and ipc calls included: their
 * socketcall()/ipc() rules are modelled); allow/errno/trace/trap/kill
 * actions; rules taken in the profile's order, as crun adds them; a
 * syscall's argument rules either one rule (any comparisons) or several
 * rules that each compare one argument, the same one, with SCMP_CMP_EQ
 * against distinct values, so that no add can fail (libseccomp would drop a
 * failing rule on every architecture).  Anything else is compiled by
 * libseccomp itself (seccomp.c), never approximated.  The tests
 * (tests/test_runtime_seccomp_gen.py) compare both outputs on the default
 * profiles, chosen corner cases and random profiles.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "seccomp_gen.h"

extern int seccomp_syscall_resolve_name_arch(uint32_t arch_token, const char *name);

#define ARCH_X86_64 0xC000003Eu
#define ARCH_X86 0x40000003u
#define ARCH_X32 0x4000003Eu
#define X32_SYSCALL_BIT 0x40000000u

enum { OP_NE = 1, OP_LT, OP_LE, OP_EQ, OP_GE, OP_GT, OP_MASKED_EQ };

/* ---- the filter model: what libseccomp's db.c keeps per architecture ---- */

struct node {
    unsigned arg;
    bool arg_h;
    int offset;
    uint32_t mask, datum;
    uint64_t datum_full;
    int op, op_orig;
    bool act_t_flg, act_f_flg;
    uint32_t act_t, act_f;
    struct node *nxt_t, *nxt_f, *lvl_prv, *lvl_nxt;
    struct node *all;       /* every node, for freeing */
};

struct sys {
    uint32_t num;
    unsigned priority;
    struct node *chains;
    unsigned node_cnt;
    uint32_t action;
    const struct gen_rule **crules;   /* the argument rules, in the order added */
    size_t ncrules;
    struct sys *pri_prv, *pri_nxt;
};

struct arch {
    uint32_t token, token_bpf;
    bool is64;
    struct sys *sys;      /* sorted by number once all rules are in */
    size_t nsys;
    int32_t slot[1024];   /* entry + 1 by number (without the x32 bit), while adding */
};

/* ---- the block machinery of gen_bpf.c ---- */

enum jt { J_NONE, J_K, J_NXT, J_IMM, J_DB, J_BLK, J_HSH };
struct jmp { int type; uint64_t v; void *p; };
struct ins { uint16_t op; struct jmp jt, jf, k; };
struct acc { int32_t offset; uint32_t mask; };
#define ACC_UNDEF ((struct acc){-1, 0xFFFFFFFFu})
#define ACC_OFF(x) ((struct acc){(x), 0xFFFFFFFFu})

struct blk {
    struct ins *ins;
    unsigned n, cap;
    struct acc acc_start, acc_end;
    bool hashed;
    uint64_t hash;          /* the content class (libseccomp: a content hash) */
    struct blk *prev, *next, *lvl_prv, *lvl_nxt;
    struct blk *all;        /* every block, for freeing */
};

struct cls {
    uint64_t key;
    struct blk *blk;
    bool found;
    struct blk *last;       /* the class's block nearest the tail, once laid out */
    struct cls *next;
};

#define NBKT 4096
struct state {
    struct cls *tbl[NBKT];
    uint64_t next_id;
    uint64_t def_hsh, bad_hsh;
    uint32_t act_default, act_badarch;
    struct arch *arch;
    struct blk *b_head, *b_tail;
    struct blk *blocks;     /* every block allocated */
    struct node *nodes;     /* every node allocated */
    struct cls **by_id;     /* the classes by id */
    size_t by_id_cap;
    bool oom;
};

static void *xcalloc(struct state *s, size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        s->oom = true;
    return p;
}

static struct blk *blk_alloc(struct state *s)
{
    struct blk *b = xcalloc(s, 1, sizeof *b);
    if (!b)
        return NULL;
    b->acc_start = ACC_UNDEF;
    b->acc_end = ACC_UNDEF;
    b->all = s->blocks;
    s->blocks = b;
    return b;
}

static struct blk *blk_append(struct state *s, struct blk *b, struct ins in)
{
    if (!b && !(b = blk_alloc(s)))
        return NULL;
    if (b->n == b->cap) {
        unsigned cap = b->cap ? b->cap * 2 : 4;
        struct ins *p = realloc(b->ins, cap * sizeof *p);
        if (!p) {
            s->oom = true;
            return NULL;
        }
        b->ins = p;
        b->cap = cap;
    }
    b->ins[b->n++] = in;
    return b;
}

static struct blk *blk_prepend(struct state *s, struct blk *b, struct ins in)
{
    if (!blk_append(s, b, in))
        return NULL;
    memmove(&b->ins[1], &b->ins[0], (b->n - 1) * sizeof in);
    b->ins[0] = in;
    return b;
}

static struct ins mk(uint16_t op, struct jmp jt, struct jmp jf, struct jmp k)
{
    return (struct ins){op, jt, jf, k};
}
#define JNO ((struct jmp){J_NONE, 0, NULL})
#define JK(x) ((struct jmp){J_K, (uint32_t)(x), NULL})
#define JNXT(x) ((struct jmp){J_NXT, (x), NULL})
#define JHSH(x) ((struct jmp){J_HSH, (x), NULL})
#define JDB(x) ((struct jmp){J_DB, 0, (x)})
#define JBLK(x) ((struct jmp){J_BLK, 0, (x)})

#define LD_ABS 0x20
#define JEQ 0x15
#define JGT 0x25
#define JGE 0x35
#define JA 0x05
#define RET 0x06
#define AND 0x54

/* A block's identity is its content: the instructions (jump targets are
 * content classes already), and the accumulator states at its ends.  That
 * is what libseccomp's hash identifies, collisions resolved. */
static bool same_jmp(const struct jmp *a, const struct jmp *b)
{
    return a->type == b->type && a->v == b->v && a->p == b->p;
}

static bool same_content(const struct blk *a, const struct blk *b)
{
    if (a->n != b->n || a->acc_start.offset != b->acc_start.offset || a->acc_start.mask != b->acc_start.mask
        || a->acc_end.offset != b->acc_end.offset || a->acc_end.mask != b->acc_end.mask)
        return false;
    for (unsigned i = 0; i < a->n; i++)
        if (a->ins[i].op != b->ins[i].op || !same_jmp(&a->ins[i].jt, &b->ins[i].jt)
            || !same_jmp(&a->ins[i].jf, &b->ins[i].jf) || !same_jmp(&a->ins[i].k, &b->ins[i].k))
            return false;
    return true;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t content_key(const struct blk *b)
{
    uint64_t h = mix(mix(b->n, (uint32_t)b->acc_start.offset), b->acc_start.mask);
    h = mix(mix(h, (uint32_t)b->acc_end.offset), b->acc_end.mask);
    for (unsigned i = 0; i < b->n; i++) {
        const struct ins *in = &b->ins[i];
        h = mix(h, in->op);
        h = mix(mix(mix(h, in->jt.type), in->jt.v), (uintptr_t)in->jt.p);
        h = mix(mix(mix(h, in->jf.type), in->jf.v), (uintptr_t)in->jf.p);
        h = mix(mix(mix(h, in->k.type), in->k.v), (uintptr_t)in->k.p);
    }
    return h;
}

/* _hsh_add(): returns the block to use (an identical earlier one, unless
 * found is set: then b itself, marked as a copy of that class) */
static struct blk *hsh_add(struct state *s, struct blk *b, bool found)
{
    if (b->hashed)
        return b;
    uint64_t key = content_key(b);
    struct cls **bkt = &s->tbl[key % NBKT];
    for (struct cls *c = *bkt; c; c = c->next)
        if (c->key == key && same_content(c->blk, b)) {
            b->hashed = true;
            b->hash = c->blk->hash;
            return found ? b : c->blk;
        }
    struct cls *c = xcalloc(s, 1, sizeof *c);
    if (!c)
        return NULL;
    if (s->next_id + 1 >= s->by_id_cap) {
        size_t cap = s->by_id_cap ? s->by_id_cap * 2 : 1024;
        struct cls **p = realloc(s->by_id, cap * sizeof *p);
        if (!p) {
            free(c);
            s->oom = true;
            return NULL;
        }
        s->by_id = p;
        s->by_id_cap = cap;
    }
    b->hashed = true;
    b->hash = ++s->next_id;
    s->by_id[b->hash] = c;
    *c = (struct cls){.key = key, .blk = b, .found = found, .next = *bkt};
    *bkt = c;
    return b;
}

static struct cls *cls_of(struct state *s, uint64_t hash)
{
    return hash && hash <= s->next_id ? s->by_id[hash] : NULL;
}

/* ---- from the model to blocks (gen_bpf.c's _gen_bpf_node/_chain/...) ---- */

static struct blk *action_blk(struct state *s, uint32_t action)
{
    return blk_append(s, NULL, mk(RET, JNO, JNO, JK(action)));
}

static struct blk *action_hsh(struct state *s, uint32_t action)
{
    struct blk *b = action_blk(s, action);
    return b ? hsh_add(s, b, false) : NULL;
}

static struct blk *gen_chain(struct state *s, const struct sys *sys, const struct node *chain,
                             const struct jmp *nxt_jump, struct acc *a_state);

static struct blk *gen_node(struct state *s, const struct node *node, struct acc *a)
{
    struct blk *b = blk_alloc(s), *act;
    uint64_t t_hash = 0, f_hash = 0;
    if (!b)
        return NULL;
    b->acc_start = *a;
    if (node->act_t_flg) {
        if (!(act = action_hsh(s, node->act_t)))
            return NULL;
        t_hash = act->hash;
    }
    if (node->act_f_flg) {
        if (!(act = action_hsh(s, node->act_f)))
            return NULL;
        f_hash = act->hash;
    }
    if (node->offset != a->offset || (node->mask & a->mask) != node->mask) {
        a->offset = node->offset;
        a->mask = 0xFFFFFFFFu;
        if (!blk_append(s, b, mk(LD_ABS, JNO, JNO, JK(node->offset))))
            return NULL;
        b->acc_start = ACC_UNDEF;
    }
    if (node->mask != a->mask) {
        a->mask = node->mask;
        if (!blk_append(s, b, mk(AND, JNO, JNO, JK(node->mask))))
            return NULL;
    }
    b->acc_end = *a;
    uint16_t op;
    switch (node->op) {
    case OP_MASKED_EQ: case OP_EQ: op = JEQ; break;
    case OP_GT: op = JGT; break;
    case OP_GE: op = JGE; break;
    default: return NULL;
    }
    struct ins in = mk(op, JNO, JNO, JK(node->datum));
    in.jt = node->nxt_t ? JDB(node->nxt_t) : node->act_t_flg ? JHSH(t_hash) : JNXT(0);
    in.jf = node->nxt_f ? JDB(node->nxt_f) : node->act_f_flg ? JHSH(f_hash) : JNXT(0);
    return blk_append(s, b, in);
}

static struct blk *chain_lvl_res(struct state *s, const struct sys *sys, struct blk *b,
                                 const struct jmp *nxt_jump)
{
    if (b->hashed)
        return b;
    for (unsigned i = 0; i < b->n; i++) {
        struct jmp *js[2] = {&b->ins[i].jt, &b->ins[i].jf};
        for (int j = 0; j < 2; j++) {
            struct blk *nb;
            if (js[j]->type == J_BLK)
                nb = chain_lvl_res(s, sys, js[j]->p, nxt_jump);
            else if (js[j]->type == J_DB)
                nb = gen_chain(s, sys, js[j]->p, nxt_jump, &b->acc_end);
            else
                continue;
            if (!nb)
                return NULL;
            *js[j] = JHSH(nb->hash);
        }
    }
    return hsh_add(s, b, false);
}

static struct blk *gen_chain(struct state *s, const struct sys *sys, const struct node *chain,
                             const struct jmp *nxt_jump, struct acc *a_state)
{
    struct blk *head = NULL, *tail = NULL, *it;
    struct acc acc = *a_state;
    if (!chain) {
        if (!(head = tail = action_blk(s, sys->action)))
            return NULL;
    } else {
        const struct node *c = chain;
        while (c->lvl_prv)
            c = c->lvl_prv;
        for (; c; c = c->lvl_nxt) {
            if (!(it = gen_node(s, c, &acc)))
                return NULL;
            if (head) {
                it->lvl_prv = tail;
                tail->lvl_nxt = it;
                tail = it;
            } else {
                head = tail = it;
            }
        }
        for (it = head; it; it = it->lvl_nxt)
            for (unsigned i = 0; i < it->n; i++) {
                struct jmp *js[2] = {&it->ins[i].jt, &it->ins[i].jf};
                for (int j = 0; j < 2; j++)
                    if (js[j]->type == J_NXT)
                        *js[j] = it->lvl_nxt ? JBLK(it->lvl_nxt) : *nxt_jump;
            }
    }
    it = tail;
    do {
        struct blk *prv = it->lvl_prv, *nxt = it->lvl_nxt;
        struct jmp tmp = JBLK(nxt);
        if (!(it = chain_lvl_res(s, sys, it, nxt ? &tmp : nxt_jump)))
            return NULL;
        if (prv)
            prv->lvl_nxt = it;
        it->lvl_prv = prv;
        it->lvl_nxt = nxt;
        if (nxt)
            nxt->lvl_prv = it;
        if (!it->lvl_prv)
            head = it;
        it = prv;
    } while (it);
    return head;
}

static struct blk *gen_syscall(struct state *s, const struct sys *sys, uint64_t nxt_hash, bool acc_reset)
{
    struct jmp def_jump = JHSH(s->def_hsh);
    struct blk *bs = blk_alloc(s), *bc;
    struct acc a;
    if (!bs)
        return NULL;
    if (acc_reset) {
        if (!blk_append(s, bs, mk(LD_ABS, JNO, JNO, JK(0))))
            return NULL;
        a = ACC_OFF(0);
        bs->acc_start = ACC_UNDEF;
        bs->acc_end = ACC_OFF(0);
    } else {
        a = ACC_UNDEF;
        bs->acc_start = ACC_OFF(0);
        bs->acc_end = ACC_OFF(0);
    }
    if (!(bc = gen_chain(s, sys, sys->chains, &def_jump, &a)))
        return NULL;
    if (!blk_append(s, bs, mk(JEQ, JHSH(bc->hash), JHSH(nxt_hash), JK(sys->num))))
        return NULL;
    return hsh_add(s, bs, true);
}

/* _sys_priority_sort() over the architecture's list and then the second's:
 * an insertion after every entry of the same or higher priority, i.e. a
 * stable sort, highest priority first (merge sort here, not a list walk) */
static int by_priority(const struct sys *x, const struct sys *y)
{
    return x->priority > y->priority ? -1 : x->priority < y->priority;
}

static bool pri_sort(struct state *s, struct arch *a, struct arch *second, struct sys **head, struct sys **tail)
{
    size_t n = a->nsys + (second ? second->nsys : 0);
    struct sys **v = xcalloc(s, n, sizeof *v), **w = xcalloc(s, n, sizeof *w);
    if (!v || !w) {
        free(v);
        free(w);
        return false;
    }
    for (size_t i = 0; i < a->nsys; i++)
        v[i] = &a->sys[i];
    for (size_t i = 0; second && i < second->nsys; i++)
        v[a->nsys + i] = &second->sys[i];
    for (size_t width = 1; width < n; width *= 2) {     /* bottom-up, stable */
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                w[k++] = by_priority(v[j], v[i]) < 0 ? v[j++] : v[i++];
            while (i < mid)
                w[k++] = v[i++];
            while (j < hi)
                w[k++] = v[j++];
        }
        struct sys **t = v;
        v = w;
        w = t;
    }
    *head = *tail = NULL;
    for (size_t i = 0; i < n; i++) {
        v[i]->pri_prv = i ? v[i - 1] : NULL;
        v[i]->pri_nxt = i + 1 < n ? v[i + 1] : NULL;
    }
    if (n) {
        *head = v[0];
        *tail = v[n - 1];
    }
    free(v);
    free(w);
    return true;
}

/* _gen_bpf_arch(): the list of blocks for one architecture (and x32 with x86_64) */
static struct blk *gen_arch(struct state *s, struct arch *a, struct arch *second)
{
    struct sys *head = NULL, *tail = NULL;
    unsigned blk_cnt = 0;
    s->arch = a;
    s->b_head = s->b_tail = NULL;
    if (!pri_sort(s, a, second, &head, &tail))
        return NULL;
    bool abi = (a->token == ARCH_X86_64 || a->token == ARCH_X32) && !second;
    bool acc_reset = !abi;
    for (struct sys *it = tail; it; it = it->pri_prv) {
        if ((int32_t)it->num < 0)
            continue;   /* _skip_syscall() */
        uint64_t nxt = s->b_head ? s->b_head->hash : s->def_hsh;
        struct blk *b = gen_syscall(s, it, nxt, it == head ? acc_reset : false);
        if (!b)
            return NULL;
        b->prev = NULL;
        b->next = s->b_head;
        if (s->b_tail) {
            s->b_head->prev = b;
            s->b_head = b;
        } else {
            s->b_head = s->b_tail = b;
        }
        if (s->b_tail->next)
            s->b_tail = s->b_tail->next;
        blk_cnt++;
    }
    if (abi) {
        struct blk *b = blk_append(s, NULL, mk(LD_ABS, JNO, JNO, JK(0)));
        if (!b)
            return NULL;
        b->acc_end = ACC_OFF(0);
        uint64_t first = s->b_head ? s->b_head->hash : s->def_hsh;
        struct ins in;
        if (a->token == ARCH_X86_64) {
            if (!blk_append(s, b, mk(JGE, JNO, JHSH(first), JK(X32_SYSCALL_BIT))))
                return NULL;
            in = mk(JEQ, JHSH(first), JHSH(s->bad_hsh), JK(0xFFFFFFFFu));
        } else {
            in = mk(JGE, JHSH(first), JHSH(s->bad_hsh), JK(X32_SYSCALL_BIT));
        }
        blk_cnt++;
        if (!blk_append(s, b, in) || !(b = hsh_add(s, b, true)))
            return NULL;
        b->next = s->b_head;
        if (s->b_head)
            s->b_head->prev = b;
        s->b_head = b;
    }
    struct blk *b = blk_append(s, NULL, mk(JEQ, JHSH(s->b_head ? s->b_head->hash : s->def_hsh),
                                           JNXT(blk_cnt), JK(a->token_bpf)));
    if (!b || !(b = hsh_add(s, b, true)))
        return NULL;
    b->next = s->b_head;
    if (s->b_head)
        s->b_head->prev = b;
    s->b_head = b;
    return b;
}

/* _gen_bpf_build_jmp_ret() and _gen_bpf_build_jmp(): 1 when a block was
 * inserted after b, 0 when the jump reaches, -1 on error */
static int build_jmp(struct state *s, struct blk *b, unsigned off, uint64_t tgt_hash)
{
    /* libseccomp walks back from the tail to the first block of the class:
     * that is the class's last block, and copies inserted here never come
     * after it (each lands right after a block that jumps to it) */
    struct cls *c = cls_of(s, tgt_hash);
    struct blk *tgt = c ? c->last : NULL, *it, *nb;
    unsigned len;
    if (!tgt || tgt == b)
        return -1;
    /* libseccomp walks forward twice (four times for a ret): once for the
     * target itself, once for the nearest block of its class (an earlier
     * copy), each walk stopping at 255 instructions.  The nearest one comes
     * first, so one walk sees both stops. */
    struct blk *it2 = NULL;
    unsigned len2 = 0;
    len = b->n - (off + 1);
    for (it = b->next; it && it != tgt && len < 255; it = it->next) {
        if (!it2 && it->hash == tgt_hash) {
            it2 = it;
            len2 = len;
        }
        len += it->n;
    }
    if (!it)
        return -1;
    if (len <= 255 && it == tgt)
        return 0;
    if (!it2) {     /* the second walk stops where the first did */
        it2 = it;
        len2 = len;
    }
    if (len2 <= 255 && it2->hash == tgt_hash)
        return 0;
    if (tgt->n == 1 && tgt->ins[0].op == RET)
        nb = action_blk(s, (uint32_t)tgt->ins[0].k.v);
    else
        nb = blk_append(s, NULL, mk(JA, JNO, JNO, JHSH(tgt_hash)));
    if (!nb)
        return -1;
    nb->hash = tgt_hash;
    nb->hashed = true;
    nb->prev = b;
    nb->next = b->next;
    b->next->prev = nb;
    b->next = nb;
    return 1;
}

static int emit(struct state *s, struct blk *head, struct blk *tail, unsigned char **out, size_t *out_len)
{
    size_t cnt = 0, at = 0;
    for (struct blk *b = head; b; b = b->next)
        cnt += b->n;
    unsigned char *p = malloc(cnt ? cnt * 8 : 1);
    if (!p) {
        s->oom = true;
        return -1;
    }
    for (struct blk *b = head; b; b = b->next) {
        for (unsigned i = 0; i < b->n; i++) {
            struct ins *in = &b->ins[i];
            uint32_t jt = 0, jf = 0, k;
            unsigned len = b->n - (i + 1);
            struct blk *j;
            if (in->jt.type == J_HSH || in->jf.type == J_HSH) {
                for (int w = 0; w < 2; w++) {
                    struct jmp *x = w ? &in->jf : &in->jt;
                    if (x->type != J_HSH)
                        continue;
                    unsigned l = len;
                    for (j = b->next; j && j->hash != x->v && l <= 255; j = j->next)
                        l += j->n;
                    if (!j || l > 255)
                        goto bad;
                    *x = (struct jmp){J_IMM, l, NULL};
                }
            }
            if (in->k.type == J_HSH) {
                unsigned l = len;
                for (j = tail; j && j->hash != in->k.v; j = j->prev)
                    ;
                for (j = j ? j->prev : NULL; j && j != b; j = j->prev)
                    l += j->n;
                if (!j)
                    goto bad;   /* ja's k is 32 bits: no 255 limit */
                in->k = JK(l);
            }
            if ((in->jt.type != J_NONE && in->jt.type != J_IMM) || (in->jf.type != J_NONE && in->jf.type != J_IMM)
                || in->k.type != J_K)
                goto bad;
            jt = in->jt.type == J_IMM ? (uint32_t)in->jt.v : 0;
            jf = in->jf.type == J_IMM ? (uint32_t)in->jf.v : 0;
            k = (uint32_t)in->k.v;
            p[at] = (unsigned char)in->op;
            p[at + 1] = (unsigned char)(in->op >> 8);
            p[at + 2] = (unsigned char)jt;
            p[at + 3] = (unsigned char)jf;
            memcpy(p + at + 4, &k, 4);
            at += 8;
        }
    }
    *out = p;
    *out_len = at;
    return 0;
bad:
    free(p);
    return -1;
}

static int build(struct state *s, struct arch *arches, int narch, unsigned char **out, size_t *out_len)
{
    struct blk *bad = action_blk(s, s->act_badarch), *def, *head, *tail, *it;
    if (!bad || !(bad = hsh_add(s, bad, true)))
        return -1;
    s->bad_hsh = bad->hash;
    if (!(def = action_blk(s, s->act_default)) || !(def = hsh_add(s, def, false)))
        return -1;
    s->def_hsh = def->hash;
    if (!(head = blk_append(s, NULL, mk(LD_ABS, JNO, JNO, JK(4)))))
        return -1;
    head->acc_end = ACC_OFF(4);
    if (!(head = hsh_add(s, head, true)))
        return -1;
    tail = head;
    int i64 = -1, i32 = -1;
    for (int i = 0; i < narch; i++) {
        if (arches[i].token == ARCH_X86_64)
            i64 = i;
        if (arches[i].token == ARCH_X32)
            i32 = i;
    }
    for (int i = 0; i < narch; i++) {
        struct arch *second = NULL;
        if (i == i64) {
            if (i32 > i)
                second = &arches[i32];
            else if (i32 >= 0)
                continue;
        } else if (i == i32) {
            if (i64 > i)
                second = &arches[i64];
            else if (i64 >= 0)
                continue;
        }
        struct blk *b = gen_arch(s, &arches[i], second);
        if (!b)
            return -1;
        b->prev = tail;
        tail->next = b;
        for (tail = b; tail->next; tail = tail->next)
            ;
    }
    bad->prev = tail;
    bad->next = NULL;
    tail->next = bad;
    tail = bad;

    /* the arch checks' "next" jumps */
    for (it = head; it && it->next; it = it->next)
        for (unsigned i = 0; i < it->n; i++) {
            struct jmp *js[2] = {&it->ins[i].jt, &it->ins[i].jf};
            for (int j = 0; j < 2; j++)
                if (js[j]->type == J_NXT) {
                    struct blk *t = it->next;
                    for (uint64_t n = js[j]->v; t && n > 0; n--)
                        t = t->next;
                    if (!t)
                        return -1;
                    *js[j] = JHSH(t->hash);
                }
        }

    /* pull in every jump target once, nearest the tail first */
    it = tail;
    do {
        struct blk *pulled = NULL;
        for (int i = (int)it->n - 1; i >= 0 && !pulled; i--) {
            struct jmp *js[3] = {&it->ins[i].jt, &it->ins[i].jf, &it->ins[i].k};
            for (int j = 0; j < 3 && !pulled; j++)
                if (js[j]->type == J_HSH) {
                    struct cls *c = cls_of(s, js[j]->v);
                    if (c && !c->found) {
                        c->found = true;
                        pulled = c->blk;
                    }
                }
        }
        if (pulled) {
            if (pulled->acc_start.offset != -1 && (it->acc_end.offset != pulled->acc_start.offset
                                                   || it->acc_end.mask != pulled->acc_start.mask)) {
                if (pulled->acc_start.mask != 0xFFFFFFFFu
                    && !blk_prepend(s, pulled, mk(AND, JNO, JNO, JK(pulled->acc_start.mask))))
                    return -1;
                if (!blk_prepend(s, pulled, mk(LD_ABS, JNO, JNO, JK(pulled->acc_start.offset))))
                    return -1;
                pulled->acc_start = ACC_UNDEF;
            }
            pulled->prev = it;
            pulled->next = it->next;
            it->next = pulled;
            if (pulled->next)
                pulled->next->prev = pulled;
            while (tail->next)
                tail = tail->next;
            it = tail;
        } else {
            it = it->prev;
        }
    } while (it);

    /* long jumps */
    for (it = head; it; it = it->next) {
        struct cls *c = cls_of(s, it->hash);
        if (c)
            c->last = it;
    }
    it = tail;
    do {
        unsigned added = 0;
        for (int i = (int)it->n - 1; i >= 0; i--) {
            struct jmp *js[2] = {&it->ins[i].jt, &it->ins[i].jf};
            for (int j = 0; j < 2; j++) {
                if (js[j]->type == J_NONE || js[j]->type == J_IMM)
                    continue;
                if (js[j]->type != J_HSH)
                    return -1;
                int rc = build_jmp(s, it, (unsigned)i, js[j]->v);
                if (rc < 0)
                    return -1;
                added += (unsigned)rc;
            }
        }
        if (!added)
            it = it->prev;
    } while (it);
    return emit(s, head, tail, out, out_len);
}

/* ---- from the rules to the model (db.c's rule generation and merging) ---- */

static struct node *node_new(struct state *s)
{
    struct node *n = xcalloc(s, 1, sizeof *n);
    if (n) {
        n->all = s->nodes;
        s->nodes = n;
    }
    return n;
}

/* _db_rule_gen_64/_32 for one rule: the chain, or NULL with *cnt 0 when no
 * comparison is left (then the rule is a plain one) */
static struct node *rule_chain(struct state *s, const struct arch *a, const struct gen_rule *r, unsigned *cnt)
{
    struct node *first = NULL, *prev[3] = {NULL, NULL, NULL}, *c[3] = {NULL, NULL, NULL};
    int op_prev = 0;
    bool tf = true;
    const struct scmp_arg_cmp *by_arg[6] = {0};
    *cnt = 0;
    for (unsigned i = 0; i < r->nargs; i++)
        by_arg[r->args[i].arg] = &r->args[i];
    for (unsigned arg = 0; arg < 6; arg++) {
        const struct scmp_arg_cmp *x = by_arg[arg];
        if (!x)
            continue;
        int op = x->op;
        uint64_t mask = op == OP_MASKED_EQ ? x->datum_a : ~0ull;
        uint64_t datum = op == OP_MASKED_EQ ? x->datum_b : x->datum_a;
        if (!a->is64) {
            if (op == OP_MASKED_EQ && (uint32_t)mask == 0)
                continue;
            struct node *n = node_new(s);
            if (!n)
                return NULL;
            n->arg = arg;
            n->offset = 16 + 8 * (int)arg;
            n->op_orig = op;
            n->mask = (uint32_t)mask;
            n->datum_full = datum;
            if (prev[0]) {
                if (tf)
                    prev[0]->nxt_t = n;
                else
                    prev[0]->nxt_f = n;
            } else {
                first = n;
            }
            (*cnt)++;
            switch (op) {
            case OP_NE: n->op = OP_EQ; tf = false; break;
            case OP_LT: n->op = OP_GE; tf = false; break;
            case OP_LE: n->op = OP_GT; tf = false; break;
            default: n->op = op; tf = true;
            }
            n->datum = (uint32_t)datum & n->mask;
            prev[0] = n;
            c[0] = n;
            continue;
        }
        if (op == OP_MASKED_EQ && (uint32_t)(mask >> 32) == 0 && (uint32_t)mask == 0)
            continue;
        bool three = op == OP_GT || op == OP_GE || op == OP_LE || op == OP_LT;
        for (int k = 0; k < (three ? 3 : 2); k++) {
            if (!(c[k] = node_new(s)))
                return NULL;
            bool hi = k < (three ? 2 : 1);
            c[k]->arg = arg;
            c[k]->arg_h = hi;
            c[k]->offset = 16 + 8 * (int)arg + (hi ? 4 : 0);
            c[k]->mask = hi ? (uint32_t)(mask >> 32) : (uint32_t)mask;
            c[k]->datum = (hi ? (uint32_t)(datum >> 32) : (uint32_t)datum) & c[k]->mask;
            c[k]->datum_full = datum;
            c[k]->op_orig = op;
        }
        if (three) {
            c[0]->op = OP_GT;
            c[1]->op = OP_EQ;
            c[2]->op = (op == OP_GT || op == OP_LE) ? OP_GT : OP_GE;
            c[0]->nxt_f = c[1];
            c[1]->nxt_t = c[2];
        } else {
            c[2] = NULL;
            c[0]->op = c[1]->op = op == OP_MASKED_EQ ? OP_MASKED_EQ : OP_EQ;
            c[0]->nxt_t = c[1];
        }
        if (prev[0]) {
            switch (op_prev) {
            case OP_GT: case OP_GE: prev[0]->nxt_t = c[0]; prev[2]->nxt_t = c[0]; break;
            case OP_EQ: case OP_MASKED_EQ: prev[1]->nxt_t = c[0]; break;
            case OP_LE: case OP_LT: prev[1]->nxt_f = c[0]; prev[2]->nxt_f = c[0]; break;
            case OP_NE: prev[0]->nxt_f = c[0]; prev[1]->nxt_f = c[0]; break;
            }
        } else {
            first = c[0];
        }
        *cnt += three ? 3 : 2;
        memcpy(prev, c, sizeof prev);
        op_prev = op;
    }
    if (!first)
        return NULL;
    if (!a->is64) {
        if (tf) {
            c[0]->act_t_flg = true;
            c[0]->act_t = r->action;
        } else {
            c[0]->act_f_flg = true;
            c[0]->act_f = r->action;
        }
        return first;
    }
    switch (op_prev) {
    case OP_GT: case OP_GE:
        c[0]->act_t_flg = c[2]->act_t_flg = true;
        c[0]->act_t = c[2]->act_t = r->action;
        break;
    case OP_LE: case OP_LT:
        c[1]->act_f_flg = c[2]->act_f_flg = true;
        c[1]->act_f = c[2]->act_f = r->action;
        break;
    case OP_EQ: case OP_MASKED_EQ:
        c[1]->act_t_flg = true;
        c[1]->act_t = r->action;
        break;
    case OP_NE:
        c[0]->act_f_flg = c[1]->act_f_flg = true;
        c[0]->act_f = c[1]->act_f = r->action;
        break;
    }
    return first;
}

/* Several rules on one syscall, each one SCMP_CMP_EQ on the same argument
 * with its own value: libseccomp merges them into one tree whose levels are
 * ordered by value, highest first (_db_tree_add with _db_chain_lt). */
static int eq_levels(const void *x, const void *y, void *is64)
{
    uint64_t a = (*(const struct gen_rule *const *)x)->args[0].datum_a;
    uint64_t b = (*(const struct gen_rule *const *)y)->args[0].datum_a;
    if (!*(const bool *)is64) {
        a = (uint32_t)a;
        b = (uint32_t)b;
    }
    return a > b ? -1 : a < b;
}

static struct node *eq_tree(struct state *s, const struct arch *a, struct sys *sy, const char **why)
{
    size_t n = sy->ncrules;
    const struct gen_rule **rs = malloc(n * sizeof *rs);
    if (!rs) {
        s->oom = true;
        return NULL;
    }
    memcpy(rs, sy->crules, n * sizeof *rs);
    unsigned arg = rs[0]->args[0].arg;
    for (size_t i = 0; i < n; i++)
        if (rs[i]->nargs != 1 || rs[i]->args[0].op != OP_EQ || rs[i]->args[0].arg != arg) {
            *why = "several argument rules for one syscall, not all one SCMP_CMP_EQ on the same argument";
            free(rs);
            return NULL;
        }
    bool is64 = a->is64;
    qsort_r(rs, n, sizeof *rs, eq_levels, &is64);   /* values distinct: add_rule() checked */
    struct node *top = NULL, *hi = NULL, *lo_prev = NULL;
    unsigned cnt = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = rs[i]->args[0].datum_a;
        if (a->is64 && (!hi || hi->datum != (uint32_t)(v >> 32))) {
            struct node *h = node_new(s);
            if (!h)
                break;
            *h = (struct node){.all = h->all, .arg = arg, .arg_h = true, .offset = 16 + 8 * (int)arg + 4, .mask = 0xFFFFFFFFu,
                               .datum = (uint32_t)(v >> 32), .datum_full = v, .op = OP_EQ, .op_orig = OP_EQ};
            if (hi) {
                hi->lvl_nxt = h;
                h->lvl_prv = hi;
            } else {
                top = h;
            }
            hi = h;
            lo_prev = NULL;
            cnt++;
        }
        struct node *l = node_new(s);
        if (!l)
            break;
        *l = (struct node){.all = l->all, .arg = arg, .offset = 16 + 8 * (int)arg, .mask = 0xFFFFFFFFu, .datum = (uint32_t)v,
                           .datum_full = v, .op = OP_EQ, .op_orig = OP_EQ, .act_t_flg = true,
                           .act_t = rs[i]->action};
        if (lo_prev) {
            lo_prev->lvl_nxt = l;
            l->lvl_prv = lo_prev;
        } else if (hi) {
            hi->nxt_t = l;
        } else {
            top = l;
        }
        lo_prev = l;
        cnt++;
    }
    free(rs);
    sy->node_cnt = cnt;
    return s->oom ? NULL : top;
}

static bool known_action(uint32_t act)
{
    switch (act & 0xFFFF0000u) {
    case 0x7FFF0000u: case 0x00050000u: case 0x7FF00000u: return true;
    case 0x00030000u: case 0x00000000u: return (act & 0xFFFFu) == 0;
    default: return false;
    }
}

/* The calls x86 also reaches through socketcall() and ipc(): libseccomp adds
 * a rule for each to the multiplexer (argument 0 = the call) and one to the
 * direct syscall, whose number its public resolver does not give (it names
 * the multiplexed form); -1 where x86 has no direct one.  Checked against
 * libseccomp's own table (mux_number()) before use. */
static const struct { const char *name; int x86; bool ipc; } MUXED[] = {
    {"socket", 359, false}, {"bind", 361, false}, {"connect", 362, false}, {"listen", 363, false},
    {"accept", -1, false}, {"getsockname", 367, false}, {"getpeername", 368, false},
    {"socketpair", 360, false}, {"send", -1, false}, {"recv", -1, false}, {"sendto", 369, false},
    {"recvfrom", 371, false}, {"shutdown", 373, false}, {"setsockopt", 366, false},
    {"getsockopt", 365, false}, {"sendmsg", 370, false}, {"recvmsg", 372, false}, {"accept4", 364, false},
    {"recvmmsg", 337, false}, {"sendmmsg", 345, false}, {"semop", -1, true}, {"semget", 393, true},
    {"semctl", 394, true}, {"semtimedop", -1, true}, {"msgsnd", 400, true}, {"msgrcv", 401, true},
    {"msgget", 399, true}, {"msgctl", 402, true}, {"shmat", 397, true}, {"shmdt", 398, true},
    {"shmget", 395, true}, {"shmctl", 396, true}};

extern char *seccomp_syscall_resolve_num_arch(uint32_t arch_token, int num);

/* -1: not a multiplexed call; 0: one, *direct its x86 number (or -1);
 * -2: libseccomp's table says otherwise (the caller falls back) */
static int mux_number(const char *name, int resolved, int *direct, bool *ipc)
{
    for (size_t i = 0; i < sizeof MUXED / sizeof *MUXED; i++)
        if (!strcmp(name, MUXED[i].name)) {
            *direct = MUXED[i].x86;
            *ipc = MUXED[i].ipc;
            if (MUXED[i].x86 < 0)
                return 0;
            char *back = seccomp_syscall_resolve_num_arch(ARCH_X86, MUXED[i].x86);
            int ok = back && !strcmp(back, name);
            free(back);
            return ok ? 0 : -2;
        }
    if ((resolved <= -100 && resolved >= -120) || (resolved <= -200 && resolved >= -224))
        return -2;   /* a multiplexed call this table does not know */
    return -1;
}

static int sys_cmp(const void *x, const void *y)
{
    const struct sys *a = x, *b = y;
    return a->num < b->num ? -1 : a->num > b->num;
}

/* Whether any of the rule's comparisons is left on this architecture: a
 * masked compare with a zero mask (in the half the architecture compares)
 * is dropped, and a rule with none left is a plain one (_db_rule_gen_*). */
static bool compares(const struct arch *a, const struct gen_rule *r)
{
    for (unsigned i = 0; i < r->nargs; i++) {
        uint64_t mask = r->args[i].datum_a;
        if (r->args[i].op != OP_MASKED_EQ || (uint32_t)mask != 0 || (a->is64 && (mask >> 32) != 0))
            return true;
    }
    return false;
}

/* db_rule_add() for the cases this generator takes on */
static struct sys *find_sys(struct arch *a, uint32_t num)
{
    uint32_t key = num & ~X32_SYSCALL_BIT;
    if (key < 1024)
        return a->slot[key] ? &a->sys[a->slot[key] - 1] : NULL;
    for (size_t i = 0; i < a->nsys; i++)
        if (a->sys[i].num == num)
            return &a->sys[i];
    return NULL;
}

static bool one_eq(const struct gen_rule *r)
{
    return r->nargs == 1 && r->args[0].op == OP_EQ;
}

static struct sys *add_rule(struct state *s, struct arch *a, size_t *cap, uint32_t num, const struct gen_rule *r,
                            const char **why)
{
    bool chained = compares(a, r);
    uint32_t key = num & ~X32_SYSCALL_BIT;
    struct sys *sy = find_sys(a, num);
    if (sy) {
        if (!sy->ncrules)          /* a plain rule is there: it covers every later one */
            return sy;
        if (!chained) {            /* a plain rule replaces the argument rules */
            sy->ncrules = 0;
            sy->action = r->action;
            return sy;
        }
        /* libseccomp merges the trees, and may refuse the rule (then drops
         * it on every architecture): only a ladder of SCMP_CMP_EQ values on
         * one argument is taken on here, where no add can fail */
        for (size_t i = 0; i < sy->ncrules; i++) {
            const struct gen_rule *x = sy->crules[i];
            uint64_t p = x->args[0].datum_a, q = r->args[0].datum_a;
            if (!one_eq(x) || !one_eq(r) || x->args[0].arg != r->args[0].arg) {
                *why = "several argument rules for one syscall, not all one SCMP_CMP_EQ on the same argument";
                return NULL;
            }
            if (a->is64 ? p == q : (uint32_t)p == (uint32_t)q) {
                *why = "two argument rules for one syscall compare the same value";
                return NULL;
            }
        }
        const struct gen_rule **p = realloc(sy->crules, (sy->ncrules + 1) * sizeof *p);
        if (!p) {
            s->oom = true;
            return NULL;
        }
        sy->crules = p;
        sy->crules[sy->ncrules++] = r;
        return sy;
    }
    if (a->nsys == *cap) {
        size_t nc = *cap ? *cap * 2 : 512;
        struct sys *p = realloc(a->sys, nc * sizeof *p);
        if (!p) {
            s->oom = true;
            return NULL;
        }
        a->sys = p;
        *cap = nc;
    }
    if (key < 1024)
        a->slot[key] = (int32_t)a->nsys + 1;
    sy = &a->sys[a->nsys++];
    memset(sy, 0, sizeof *sy);
    sy->num = num;
    sy->action = r->action;
    if (chained) {
        if (!(sy->crules = malloc(sizeof *sy->crules))) {
            s->oom = true;
            return NULL;
        }
        sy->crules[0] = r;
        sy->ncrules = 1;
    }
    return sy;
}

int gen_bpf(uint32_t def_action, const uint32_t *arch_tokens, unsigned n_arches, const struct gen_rule *rules,
            size_t n_rules, unsigned char **out, size_t *out_len, const char **why)
{
    struct state *s = calloc(1, sizeof *s);
    struct arch arches[3];
    size_t caps[3] = {0, 0, 0};
    int narch = 0, rc = -1;
    struct gen_rule *muxed = NULL;
    if (!s)
        return -1;
    memset(arches, 0, sizeof arches);
    *why = NULL;
    s->act_default = def_action;
    s->act_badarch = 0;   /* SCMP_ACT_KILL, libseccomp's default */
    if (!known_action(def_action)) {
        *why = "a default action outside allow/errno/trace/trap/kill";
        goto out;
    }
    arches[narch++] = (struct arch){.token = ARCH_X86_64, .token_bpf = ARCH_X86_64, .is64 = true};
    for (unsigned i = 0; i < n_arches; i++) {
        uint32_t t = arch_tokens[i];
        bool dup = t == 0;   /* unknown to libseccomp: not added there either */
        for (int j = 0; j < narch; j++)
            dup |= arches[j].token == t;
        if (dup)
            continue;
        if (t == ARCH_X86)
            arches[narch++] = (struct arch){.token = t, .token_bpf = ARCH_X86, .is64 = false};
        else if (t == ARCH_X32)
            arches[narch++] = (struct arch){.token = t, .token_bpf = ARCH_X86_64, .is64 = false};
        else {
            *why = "an architecture other than x86_64, x86 and x32";
            goto out;
        }
    }
    int socketcall_nr = seccomp_syscall_resolve_name_arch(ARCH_X86, "socketcall");
    int ipc_nr = seccomp_syscall_resolve_name_arch(ARCH_X86, "ipc");
    size_t n_muxed = 0;
    if (!(muxed = calloc(n_rules ? n_rules : 1, sizeof *muxed)))   /* the x86 multiplexer rules */
        goto out;
    for (size_t i = 0; i < n_rules; i++) {
        const struct gen_rule *r = &rules[i];
        if (!known_action(r->action)) {
            *why = "an action outside allow/errno/trace/trap/kill";
            goto out;
        }
        bool seen[6] = {false};
        for (unsigned j = 0; j < r->nargs; j++) {
            if (r->args[j].arg >= 6 || seen[r->args[j].arg] || r->args[j].op < OP_NE || r->args[j].op > OP_MASKED_EQ) {
                *why = "an argument comparison libseccomp refuses";
                goto out;
            }
            seen[r->args[j].arg] = true;
        }
    }
    for (size_t i = 0; i < n_rules; i++) {
        const struct gen_rule *r = &rules[i];
        if (r->nr == -1)
            continue;   /* unknown here: libseccomp refuses it, the caller warns */
        for (int k = 0; k < narch; k++) {
            struct arch *a = &arches[k];
            int num = a->token == ARCH_X86_64 ? r->nr : seccomp_syscall_resolve_name_arch(a->token, r->name);
            if (a->token == ARCH_X86) {
                bool ipc = false;
                int direct, m = mux_number(r->name, num, &direct, &ipc);
                if (m == -2 || (m == 0 && num >= 0)) {
                    *why = "a socket or ipc call this generator does not know on x86";
                    goto out;
                }
                if (m == 0) {
                    /* libseccomp first adds the call to socketcall()/ipc()
                     * with argument 0 compared to the call's number */
                    int mux_nr = ipc ? ipc_nr : socketcall_nr;
                    struct sys *mx = find_sys(a, (uint32_t)mux_nr);
                    if (r->nargs && !(mx && !mx->ncrules)) {
                        *why = "a socket or ipc call with argument rules on x86";
                        goto out;
                    }
                    struct gen_rule *x = &muxed[n_muxed++];
                    *x = (struct gen_rule){.action = r->action, .nargs = 1, .name = r->name, .nr = mux_nr,
                                           .args = {{0, OP_EQ, (uint64_t)((-num) % (ipc ? 200 : 100)), 0}}};
                    if (!add_rule(s, a, &caps[k], (uint32_t)mux_nr, x, why))
                        goto out;
                    if (direct >= 0)
                        num = direct;
                } else if (num < 0) {
                    continue;       /* x86 adds nothing for a call it lacks */
                }
            }
            /* elsewhere a call the architecture lacks still gets an entry
             * (a negative number): never emitted, but it takes part in the
             * priority order, and so decides which block loads the number */
            struct sys *sy = add_rule(s, a, &caps[k], (uint32_t)num, r, why);
            if (!sy)
                goto out;
        }
    }
    for (int k = 0; k < narch; k++) {
        struct arch *a = &arches[k];
        qsort(a->sys, a->nsys, sizeof *a->sys, sys_cmp);
        for (size_t i = 0; i < a->nsys; i++) {
            struct sys *sy = &a->sys[i];
            if (sy->ncrules == 1) {
                sy->chains = rule_chain(s, a, sy->crules[0], &sy->node_cnt);
                if (!sy->chains && s->oom)
                    goto out;
                if (!sy->chains)
                    sy->action = sy->crules[0]->action;
            } else if (sy->ncrules > 1) {
                sy->chains = eq_tree(s, a, sy, why);
                if (!sy->chains)
                    goto out;
            }
            sy->priority = 0xFFFFu - sy->node_cnt;
        }
    }
    rc = build(s, arches, narch, out, out_len);
    if (rc < 0 && !*why && !s->oom)
        *why = "an internal inconsistency (a jump with no target)";
out:
    if (rc < 0 && !*why && s->oom)
        *why = "out of memory";
    free(muxed);
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < arches[k].nsys; i++)
            free(arches[k].sys[i].crules);
        free(arches[k].sys);
    }
    while (s->blocks) {
        struct blk *b = s->blocks;
        s->blocks = b->all;
        free(b->ins);
        free(b);
    }
    while (s->nodes) {
        struct node *n = s->nodes;
        s->nodes = n->all;
        free(n);
    }
    free(s->by_id);
    for (size_t i = 0; i < NBKT; i++)
        while (s->tbl[i]) {
            struct cls *c = s->tbl[i];
            s->tbl[i] = c->next;
            free(c);
        }
    free(s);
    return rc < 0 ? -1 : 0;
}
