/*
 * cvbench probe: the one workload every backend runs.
 *
 * Built static (gcc -O2 -static) so the same bytes run on the host, inside
 * every container runtime and as a VM's /init payload, with no loader or libc
 * differences between them.  Everything it reports goes to stdout as
 * "CVB ..." lines, because in a VM stdout is the serial console and the host
 * only sees what crosses it.
 *
 *   probe ready                       print READY and exit
 *   probe ops [--iters N] [--min-ms M] [--repeat R] [--cpu C] [--pair A,B] OP...
 *   probe self                        the isolation it got: Seccomp, CapEff, NoNewPrivs, ns ids
 *   probe strength [--no-battery]     self + syscall reachability, devices, sensitive paths, escape battery
 *   probe mem MiB                     touch MiB of anonymous memory, then wait
 *   probe sleep S                     wait S seconds (S < 0: forever)
 *
 * Iteration counts calibrate themselves unless --iters is given: the same
 * command must finish in a sensible time both on bare metal (getppid ~80 ns)
 * and under gVisor's ptrace platform or TCG (~70 us), a 1000x range.
 *
 * --cpu C pins the probe to CPU C; --pair A,B puts pipe_pingpong's two ends on
 * CPUs A and B (the parent on A, the child on B), so a context switch always
 * crosses the same pair.  The affinity it got is printed as "CVB affinity".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITERS (1L << 30)

static volatile uint64_t sink;
static int pair_a = -1, pair_b = -1; /* pipe_pingpong's two CPUs, -1: not pinned */

static int pin_to(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The measured bodies.  Each returns 0, or -1 with errno set. */

static int op_getppid(long n)
{
	for (long i = 0; i < n; i++)
		sink += (uint64_t)syscall(SYS_getppid); /* no glibc caching */
	return 0;
}

static int op_clock_gettime(long n)
{
	struct timespec ts;
	for (long i = 0; i < n; i++) {
		clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: the no-kernel control */
		sink += (uint64_t)ts.tv_nsec;
	}
	return 0;
}

static int op_read_zero(long n)
{
	char c;
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	for (long i = 0; i < n; i++)
		if (read(fd, &c, 1) != 1) {
			close(fd);
			return -1;
		}
	close(fd);
	return 0;
}

static int op_open_close(long n)
{
	for (long i = 0; i < n; i++) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		close(fd);
	}
	return 0;
}

static int op_mmap_touch(long n)
{
	const size_t len = 16 * 4096; /* 16 page faults per iteration */
	for (long i = 0; i < n; i++) {
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return -1;
		for (size_t off = 0; off < len; off += 4096)
			p[off] = 1;
		munmap(p, len);
	}
	return 0;
}

static int op_fork_wait(long n)
{
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0)
			_exit(0);
		if (waitpid(pid, NULL, 0) < 0)
			return -1;
	}
	return 0;
}

static int op_pipe_pingpong(long n)
{
	int ab[2], ba[2];
	char c = 'x';
	if (pipe(ab) < 0 || pipe(ba) < 0)
		return -1;
	cpu_set_t before;
	int pinned = pair_a >= 0 && sched_getaffinity(0, sizeof(before), &before) == 0;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (pinned && pin_to(pair_b) < 0)
			_exit(1);
		for (long i = 0; i < n; i++)
			if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1)
				_exit(1);
		_exit(0);
	}
	int rc = 0;
	if (pinned && pin_to(pair_a) < 0)
		rc = -1;
	for (long i = 0; i < n && rc == 0; i++)
		if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
			rc = -1;
	if (pinned)
		sched_setaffinity(0, sizeof(before), &before);
	close(ab[0]); close(ab[1]); close(ba[0]); close(ba[1]);
	int status = 0;
	waitpid(pid, &status, 0);
	if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		errno = EPIPE;
		rc = -1;
	}
	return rc;
}

static int op_cpuid(long n)
{
	for (long i = 0; i < n; i++) {
		uint32_t a = 0, b, c = 0, d;
		__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
		sink += a + b + c + d;
	}
	return 0;
}

struct op {
	const char *name;
	int (*fn)(long);
	int round_trips; /* pipe_pingpong: one iteration is one round trip */
};

static const struct op OPS[] = {
	{"getppid", op_getppid, 1},
	{"clock_gettime", op_clock_gettime, 1},
	{"read_zero", op_read_zero, 1},
	{"open_close", op_open_close, 1},
	{"mmap_touch", op_mmap_touch, 1},
	{"fork_wait", op_fork_wait, 1},
	{"pipe_pingpong", op_pipe_pingpong, 1},
	{"cpuid", op_cpuid, 1},
};
#define NOPS (sizeof(OPS) / sizeof(OPS[0]))

static void usage_ops(FILE *f)
{
	fprintf(f, "valid ops:");
	for (size_t i = 0; i < NOPS; i++)
		fprintf(f, " %s", OPS[i].name);
	fprintf(f, "\n");
}

static const struct op *find_op(const char *name)
{
	for (size_t i = 0; i < NOPS; i++)
		if (strcmp(OPS[i].name, name) == 0)
			return &OPS[i];
	return NULL;
}

static int fail(const char *what, const char *why)
{
	fprintf(stderr, "cvbench-probe: %s: %s\n", what, why);
	return 2;
}

static int parse_long(const char *s, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s)
		return -1;
	*out = v;
	return 0;
}

/* Time one batch of n iterations; returns elapsed ns or -1. */
static int64_t timed(const struct op *op, long n)
{
	int64_t t0 = now_ns();
	if (op->fn(n) < 0)
		return -1;
	return now_ns() - t0;
}

static int run_op(const struct op *op, long iters, long min_ms, long repeat)
{
	long n = iters;
	if (n <= 0) {
		/* Calibrate: double until one batch lasts at least min_ms. */
		n = 1;
		for (;;) {
			int64_t t = timed(op, n);
			if (t < 0)
				break;
			if (t >= min_ms * 1000000L || n >= MAX_ITERS)
				break;
			n *= 2;
		}
	}
	for (long r = 0; r < repeat; r++) {
		int64_t t = timed(op, n);
		if (t < 0) {
			printf("CVB op=%s error=%s\n", op->name, strerror(errno));
			fflush(stdout);
			return 1;
		}
		printf("CVB op=%s iters=%ld ns_per_op=%.2f\n", op->name, n,
		       (double)t / (double)n);
		fflush(stdout);
	}
	return 0;
}

/* "A,B" -> two CPU numbers */
static int parse_pair(const char *s, int *a, int *b)
{
	char *end;
	long x = strtol(s, &end, 10);
	if (end == s || *end != ',' || x < 0 || x >= CPU_SETSIZE)
		return -1;
	const char *t = end + 1;
	long y = strtol(t, &end, 10);
	if (end == t || *end || y < 0 || y >= CPU_SETSIZE)
		return -1;
	*a = (int)x;
	*b = (int)y;
	return 0;
}

static int cmd_ops(int argc, char **argv)
{
	long iters = 0, min_ms = 50, repeat = 1, cpu = -1;
	int i = 0, rc = 0;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--cpu") == 0) {
			if (i + 1 >= argc || parse_long(argv[i + 1], &cpu) < 0 || cpu < 0 || cpu >= CPU_SETSIZE)
				return fail(argv[i], "needs a CPU number");
			i++;
			continue;
		}
		if (strcmp(argv[i], "--pair") == 0) {
			if (i + 1 >= argc || parse_pair(argv[i + 1], &pair_a, &pair_b) < 0)
				return fail(argv[i], "needs two CPU numbers, e.g. --pair 0,1");
			i++;
			continue;
		}
		long *dst = strcmp(argv[i], "--iters") == 0	 ? &iters
			    : strcmp(argv[i], "--min-ms") == 0 ? &min_ms
			    : strcmp(argv[i], "--repeat") == 0 ? &repeat
							       : NULL;
		if (!dst)
			return fail(argv[i], "unknown option; use --iters N, --min-ms M, --repeat R, --cpu C or --pair A,B");
		if (i + 1 >= argc || parse_long(argv[i + 1], dst) < 0 || *dst < 1)
			return fail(argv[i], "needs a positive whole number");
		i++;
	}
	if (i >= argc) {
		usage_ops(stderr);
		return fail("ops", "no op given");
	}
	/* Check every name before measuring anything: a typo fails fast. */
	for (int j = i; j < argc; j++)
		if (!find_op(argv[j])) {
			usage_ops(stderr);
			return fail(argv[j], "unknown op");
		}
	/* Pin before measuring; a failure (a CPU this machine, VM or cpuset lacks)
	 * is reported and the op fails rather than running unpinned unnoticed. */
	if (cpu >= 0 && pin_to((int)cpu) < 0) {
		printf("CVB op=affinity error=cpu %ld: %s\n", cpu, strerror(errno));
		return 1;
	}
	char c1[24] = "unpinned", c2[48] = "unpinned";
	if (cpu >= 0)
		snprintf(c1, sizeof(c1), "%ld", cpu);
	if (pair_a >= 0)
		snprintf(c2, sizeof(c2), "%d,%d", pair_a, pair_b);
	printf("CVB affinity cpu=%s pingpong=%s\n", c1, c2);
	for (int j = i; j < argc && rc == 0; j++)
		rc = run_op(find_op(argv[j]), iters, min_ms, repeat);
	return rc;
}

static int cmd_mem(int argc, char **argv)
{
	long mib, secs = -1;
	if (argc < 1 || parse_long(argv[0], &mib) < 0 || mib < 0)
		return fail("mem", "needs a size in MiB, e.g. 'mem 64'");
	if (argc > 1 && parse_long(argv[1], &secs) < 0)
		return fail("mem", "the optional second argument is seconds to wait");
	size_t len = (size_t)mib << 20;
	if (len) {
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return fail("mem", strerror(errno));
		for (size_t off = 0; off < len; off += 4096)
			p[off] = (char)off | 1; /* non-zero: no zero-page sharing */
	}
	printf("CVB mem_touched_mib=%ld\n", mib);
	fflush(stdout);
	if (secs < 0)
		for (;;)
			pause();
	sleep((unsigned)secs);
	return 0;
}

static int cmd_sleep(int argc, char **argv)
{
	long secs;
	if (argc < 1 || parse_long(argv[0], &secs) < 0)
		return fail("sleep", "needs seconds, e.g. 'sleep 5' (negative: forever)");
	printf("CVB sleeping s=%ld\n", secs);
	fflush(stdout);
	if (secs < 0)
		for (;;)
			pause();
	sleep((unsigned)secs);
	return 0;
}

/* The isolation this process got, as the kernel shows it to the process
 * itself: the same view in every runtime, so configs can be compared. */
static int cmd_self(void)
{
	static const char *const keys[] = {"Seccomp:", "Seccomp_filters:", "CapEff:", "CapBnd:",
					   "NoNewPrivs:"};
	static const char *const ns[] = {"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"};
	char line[256], out[1024] = "CVB self";
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return fail("self", "cannot open /proc/self/status");
	while (fgets(line, sizeof(line), f))
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			if (strncmp(line, keys[k], strlen(keys[k])) == 0) {
				char val[64] = "";
				sscanf(line + strlen(keys[k]), "%63s", val);
				size_t len = strlen(out);
				snprintf(out + len, sizeof(out) - len, " %.*s=%s",
					 (int)strlen(keys[k]) - 1, keys[k], val);
			}
	fclose(f);
	printf("%s\n", out);
	strcpy(out, "CVB self");
	for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		char path[64], target[128];
		snprintf(path, sizeof(path), "/proc/self/ns/%s", ns[k]);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = 0;
		size_t len = strlen(out);
		snprintf(out + len, sizeof(out) - len, " ns_%s=%s", ns[k], n > 0 ? target : "none");
	}
	printf("%s\n", out);
	return 0;
}

/* ---- network ops (issue 12: the network scenario) -------------------------
 *
 *   probe net serve tcp|udp PORT          echo/discard server on 0.0.0.0:PORT, until SIGTERM
 *   probe net client tcp_rr|udp_rr|tcp_stream ADDR PORT [--ms M] [--size B]
 *
 * TCP clients send one mode byte first: 'R' (echo SIZE-byte messages) or 'S'
 * (discard until EOF, then answer the byte count, so the client's clock stops
 * only once every byte arrived).  One connection at a time, in the server
 * process itself: its own CPU time (/proc/PID/stat) is all the server's work.
 * Latencies go into an HDR-style log-linear histogram (64 sub-buckets per
 * power of two, <1.6% bucket width) printed as "CVB nethist", so the host
 * computes any percentile without a mean ever being involved.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define NH_SUB 64
#define NH_BUCKETS (NH_SUB + 40 * NH_SUB)

static long nh_count[NH_BUCKETS];

static int nh_index(uint64_t v)
{
	if (v < NH_SUB)
		return (int)v;
	int e = 63 - __builtin_clzll(v); /* e >= 6 */
	int i = NH_SUB + (e - 6) * NH_SUB + (int)((v >> (e - 6)) & (NH_SUB - 1));
	return i < NH_BUCKETS ? i : NH_BUCKETS - 1;
}

static uint64_t nh_lower(int i)
{
	if (i < NH_SUB)
		return (uint64_t)i;
	int e = (i - NH_SUB) / NH_SUB + 6, sub = (i - NH_SUB) % NH_SUB;
	return (uint64_t)(NH_SUB + sub) << (e - 6);
}

static int net_full(int fd, char *buf, size_t n, int wr)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = wr ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

static int net_socket(int type, const char *addr, long port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, addr, &sa->sin_addr) != 1) {
		errno = EINVAL;
		return -1;
	}
	return socket(AF_INET, type, 0);
}

static int net_serve(const char *proto, long port)
{
	struct sockaddr_in sa;
	int udp = strcmp(proto, "udp") == 0;
	if (!udp && strcmp(proto, "tcp") != 0)
		return fail(proto, "serve: protocol must be tcp or udp");
	int s = net_socket(udp ? SOCK_DGRAM : SOCK_STREAM, "0.0.0.0", port, &sa), one = 1;
	if (s < 0)
		return fail("socket", strerror(errno));
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || (!udp && listen(s, 4) < 0))
		return fail("bind", strerror(errno));
	printf("CVB net_serve proto=%s port=%ld\n", proto, port);
	fflush(stdout);
	static char buf[1 << 17];
	if (udp) {
		for (;;) {
			struct sockaddr_in from;
			socklen_t fl = sizeof(from);
			ssize_t n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
			if (n >= 0)
				sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
		}
	}
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		char mode = 0;
		if (net_full(c, &mode, 1, 0) == 0 && mode == 'R') {
			uint32_t size = 0;
			if (net_full(c, (char *)&size, 4, 0) == 0 && size > 0 && size <= sizeof(buf))
				while (net_full(c, buf, size, 0) == 0 && net_full(c, buf, size, 1) == 0)
					;
		} else if (mode == 'S') {
			uint64_t total = 0;
			ssize_t n;
			while ((n = read(c, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
				total += n > 0 ? (uint64_t)n : 0;
			net_full(c, (char *)&total, sizeof(total), 1);
		}
		close(c);
	}
}

static int net_client(const char *op, const char *addr, long port, long ms, long size)
{
	struct sockaddr_in sa;
	int udp = strcmp(op, "udp_rr") == 0, stream = strcmp(op, "tcp_stream") == 0, one = 1;
	if (!udp && !stream && strcmp(op, "tcp_rr") != 0)
		return fail(op, "unknown net op (tcp_rr, udp_rr, tcp_stream)");
	if (size < 1 || size > (1 << 17))
		return fail("--size", "must be 1..131072 bytes");
	int s = net_socket(udp ? SOCK_DGRAM : SOCK_STREAM, addr, port, &sa);
	if (s < 0)
		return fail(addr, strerror(errno));
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return fail("connect", strerror(errno));
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	static char buf[1 << 17];
	memset(buf, 'x', sizeof(buf));
	int64_t t0 = now_ns(), end = t0 + ms * 1000000L;
	if (stream) {
		uint64_t sent = 0, got = 0;
		if (net_full(s, "S", 1, 1) < 0)
			return fail("send", strerror(errno));
		while (now_ns() < end) {
			if (net_full(s, buf, sizeof(buf), 1) < 0)
				return fail("send", strerror(errno));
			sent += sizeof(buf);
		}
		shutdown(s, SHUT_WR);
		if (net_full(s, (char *)&got, sizeof(got), 0) < 0)
			return fail("stream", "the server did not confirm the byte count");
		int64_t ns = now_ns() - t0;
		printf("CVB net op=tcp_stream bytes=%llu sent=%llu ns=%lld\n", (unsigned long long)got,
		       (unsigned long long)sent, (long long)ns);
		close(s);
		return got == sent ? 0 : fail("stream", "the server received fewer bytes than were sent");
	}
	if (udp) {
		struct timeval tv = {1, 0};
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	} else {
		uint32_t sz = (uint32_t)size;
		if (net_full(s, "R", 1, 1) < 0 || net_full(s, (char *)&sz, 4, 1) < 0)
			return fail("send", strerror(errno));
	}
	long n = 0, lost = 0;
	int64_t now = t0;
	while (now < end) {
		int64_t a = now_ns();
		if (udp) {
			if (send(s, buf, (size_t)size, 0) != size)
				return fail("send", strerror(errno));
			if (recv(s, buf, sizeof(buf), 0) != size) {
				if (++lost > 100)
					return fail("udp_rr", "more than 100 requests got no answer within 1 s");
				now = now_ns();
				continue;
			}
		} else if (net_full(s, buf, (size_t)size, 1) < 0 || net_full(s, buf, (size_t)size, 0) < 0) {
			return fail("tcp_rr", strerror(errno ? errno : ECONNRESET));
		}
		now = now_ns();
		nh_count[nh_index((uint64_t)(now - a))]++;
		n++;
	}
	close(s);
	printf("CVB net op=%s n=%ld lost=%ld size=%ld ns=%lld\n", op, n, lost, size, (long long)(now - t0));
	/* The histogram: lower bound of each non-empty bucket and its count. */
	fputs("CVB nethist", stdout);
	for (int i = 0; i < NH_BUCKETS; i++)
		if (nh_count[i])
			printf(" %llu:%ld", (unsigned long long)nh_lower(i), nh_count[i]);
	fputs("\n", stdout);
	return 0;
}

static int cmd_net(int argc, char **argv)
{
	long port, ms = 1000, size = 1;
	if (argc >= 3 && strcmp(argv[0], "serve") == 0) {
		if (parse_long(argv[2], &port) < 0 || port < 1 || port > 65535)
			return fail(argv[2], "port must be 1..65535");
		return net_serve(argv[1], port);
	}
	if (argc < 4 || strcmp(argv[0], "client") != 0)
		return fail("net", "usage: net serve tcp|udp PORT | net client OP ADDR PORT [--ms M] [--size B]");
	if (parse_long(argv[3], &port) < 0 || port < 1 || port > 65535)
		return fail(argv[3], "port must be 1..65535");
	for (int i = 4; i < argc; i++) {
		long *dst = strcmp(argv[i], "--ms") == 0 ? &ms : strcmp(argv[i], "--size") == 0 ? &size : NULL;
		if (!dst || i + 1 >= argc || parse_long(argv[i + 1], dst) < 0 || *dst < 1)
			return fail(argv[i], "expected --ms M or --size B with a positive number");
		i++;
	}
	return net_client(argv[1], argv[2], port, ms, size);
}
/* ---- end of network ops ---------------------------------------------------- */

/* ---- strength (issue 14): what the workload can reach, and the escape battery ----
 * Every call here is harmless by construction, on the host too: syscalls are
 * probed with invalid arguments (fd -1, pointer -1, flags -1) so the kernel
 * returns EBADF/EFAULT/EINVAL before acting, in a throw-away child; syscalls
 * that would act whatever the arguments are not probed and named.  Escape
 * attempts only open (never write) control files, create objects in a private
 * temp dir and remove them, mount only in a private mount namespace of a
 * throw-away child, and ptrace with PTRACE_SEIZE (the tracee is never stopped). */
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <dirent.h>
#include <netinet/in.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>

#define SYS_PROBE_MAX 463 /* x86-64 numbers 0..462 are probed */

/* Not probed: they act (or block, or end the process) whatever the arguments. */
static const char *sys_skip_reason(long nr)
{
	switch (nr) {
	case SYS_exit: case SYS_exit_group: return "ends_the_process";
	case SYS_rt_sigreturn: return "restores_a_signal_frame";
	case SYS_fork: case SYS_vfork: case SYS_clone: case SYS_clone3: return "creates_a_process";
	case SYS_pause: return "blocks";
	case SYS_reboot: return "reboot";
	case SYS_kill: case SYS_tkill: case SYS_tgkill: case SYS_rt_sigqueueinfo:
	case SYS_rt_tgsigqueueinfo: case SYS_pidfd_send_signal: return "sends_signals";
	case SYS_sync: return "acts_without_arguments";
	case SYS_vhangup: return "hangs_up_the_terminal";
	case SYS_msgget: return "creates_an_ipc_queue_with_any_key";
	case SYS_init_module: return "module_loading";
	}
	return NULL;
}

/* result codes in the shared map */
enum { SR_UNSET, SR_REACH, SR_ENOSYS, SR_EPERM, SR_KILLED, SR_SKIP };

static void sys_child(volatile unsigned char *res, volatile long *next)
{
	for (long nr = *next; nr < SYS_PROBE_MAX; nr = ++*next) {
		if (sys_skip_reason(nr)) {
			res[nr] = SR_SKIP;
			continue;
		}
		errno = 0;
		long r = syscall(nr, -1L, -1L, -1L, -1L, -1L, -1L);
		res[nr] = r >= 0 ? SR_REACH : errno == ENOSYS ? SR_ENOSYS : errno == EPERM ? SR_EPERM : SR_REACH;
	}
	_exit(0);
}

static void append_num(char *buf, size_t cap, long n)
{
	size_t len = strlen(buf);
	if (len + 8 < cap)
		snprintf(buf + len, cap - len, "%s%ld", len ? "," : "", n);
}

static int strength_syscalls(void)
{
	unsigned char *res = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED)
		return -1;
	long *next = (long *)(res + 2048);
	*next = 0;
	while (*next < SYS_PROBE_MAX) {
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0)
			sys_child(res, next);
		int st = 0;
		waitpid(pid, &st, 0);
		if (*next < SYS_PROBE_MAX) { /* the child died inside syscall *next */
			res[*next] = SR_KILLED;
			++*next;
		}
	}
	int n[SR_SKIP + 1] = {0};
	char enosys[2048] = "", eperm[2048] = "", killed[512] = "", skipped[512] = "";
	for (long nr = 0; nr < SYS_PROBE_MAX; nr++) {
		n[res[nr]]++;
		if (res[nr] == SR_ENOSYS) append_num(enosys, sizeof(enosys), nr);
		if (res[nr] == SR_EPERM) append_num(eperm, sizeof(eperm), nr);
		if (res[nr] == SR_KILLED) append_num(killed, sizeof(killed), nr);
		if (res[nr] == SR_SKIP) append_num(skipped, sizeof(skipped), nr);
	}
	printf("CVB sys_range=0-%d sys_reachable=%d sys_enosys=%d sys_eperm=%d sys_killed=%d sys_not_probed=%d\n",
	       SYS_PROBE_MAX - 1, n[SR_REACH], n[SR_ENOSYS], n[SR_EPERM], n[SR_KILLED], n[SR_SKIP]);
	printf("CVB sys_enosys_nrs=%s\n", *enosys ? enosys : "-");
	printf("CVB sys_eperm_nrs=%s\n", *eperm ? eperm : "-");
	printf("CVB sys_killed_nrs=%s\n", *killed ? killed : "-");
	printf("CVB sys_not_probed_nrs=%s\n", *skipped ? skipped : "-");
	for (long nr = 0; nr < SYS_PROBE_MAX; nr++)
		if (res[nr] == SR_SKIP)
			printf("CVB sys_skip_%ld=%s\n", nr, sys_skip_reason(nr));
	munmap(res, 4096);
	return 0;
}

static int count_devices(const char *dir, int depth, char *names, size_t cap)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[512];
		struct stat st;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		if (lstat(p, &st) < 0)
			continue;
		if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
			n++;
			size_t len = strlen(names);
			if (len + strlen(p) + 2 < cap)
				snprintf(names + len, cap - len, "%s%s", len ? "," : "", p + 5);
		} else if (S_ISDIR(st.st_mode) && depth > 0) {
			n += count_devices(p, depth - 1, names, cap);
		}
	}
	closedir(d);
	return n;
}

static const char *const SENSITIVE[][2] = {
	{"sysrq_trigger", "/proc/sysrq-trigger"}, {"core_pattern", "/proc/sys/kernel/core_pattern"},
	{"modprobe", "/proc/sys/kernel/modprobe"}, {"kcore", "/proc/kcore"}, {"proc_kmsg", "/proc/kmsg"},
	{"dev_kmsg", "/dev/kmsg"}, {"proc_keys", "/proc/keys"}, {"timer_list", "/proc/timer_list"},
	{"sched_debug", "/proc/sched_debug"}, {"drop_caches", "/proc/sys/vm/drop_caches"},
	{"proc_acpi", "/proc/acpi"}, {"sys_firmware", "/sys/firmware"}, {"sys_kernel_debug", "/sys/kernel/debug"},
	{"sys_kernel_security", "/sys/kernel/security"}, {"sys_tracing", "/sys/kernel/tracing"},
	{"sys_fs_cgroup", "/sys/fs/cgroup"}, {"sys_power", "/sys/power/state"},
};

/* r/w as access(2) sees them for this process (effective ids, read-only mounts):
 * nothing is opened for writing. */
static void strength_paths(void)
{
	int readable = 0, writable = 0;
	char out[2048] = "CVB";
	for (size_t i = 0; i < sizeof(SENSITIVE) / sizeof(SENSITIVE[0]); i++) {
		const char *p = SENSITIVE[i][1];
		const char *v;
		struct stat st;
		if (faccessat(AT_FDCWD, p, F_OK, AT_EACCESS) < 0) {
			v = "absent";
		} else if (stat(p, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) {
			v = "masked"; /* /dev/null bound over it (OCI maskedPaths) */
		} else {
			int r = faccessat(AT_FDCWD, p, R_OK, AT_EACCESS) == 0;
			int w = faccessat(AT_FDCWD, p, W_OK, AT_EACCESS) == 0;
			readable += r;
			writable += w;
			v = r && w ? "rw" : r ? "r" : w ? "w" : "none";
		}
		size_t len = strlen(out);
		snprintf(out + len, sizeof(out) - len, " path_%s=%s", SENSITIVE[i][0], v);
	}
	printf("%s\n", out);
	printf("CVB paths_checked=%zu paths_readable=%d paths_writable=%d\n",
	       sizeof(SENSITIVE) / sizeof(SENSITIVE[0]), readable, writable);
}

static void esc(const char *name, int ok, int err, const char *na)
{
	if (na)
		printf("CVB esc_%s=na:%s\n", name, na);
	else if (ok)
		printf("CVB esc_%s=succeeded\n", name);
	else
		printf("CVB esc_%s=blocked:%s\n", name, strerrorname_np(err) ? strerrorname_np(err) : "error");
}

/* open (and read), never write */
static void esc_open(const char *name, const char *path, int flags, int read1)
{
	int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		esc(name, 0, errno, errno == ENOENT ? "absent" : NULL);
		return;
	}
	int ok = 1, err = 0;
	if (read1) {
		char c[8192]; /* a whole kmsg record fits (a shorter read is EINVAL) */
		if (read(fd, c, sizeof(c)) < 0 && errno != EAGAIN) {
			ok = 0;
			err = errno;
		}
	}
	close(fd);
	esc(name, ok, err, NULL);
}

static int find_release_agent(char *out, size_t cap)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char dev[256], dir[256], type[64];
	int found = 0;
	if (!f)
		return 0;
	while (!found && fscanf(f, "%255s %255s %63s %*[^\n]", dev, dir, type) == 3)
		if (strcmp(type, "cgroup") == 0) {
			snprintf(out, cap, "%s/release_agent", dir);
			found = faccessat(AT_FDCWD, out, F_OK, 0) == 0;
		}
	fclose(f);
	return found;
}

/* A private scratch dir for the attempts that create something: the first
 * writable of these, removed at the end. */
static int scratch_dir(char *out, size_t cap)
{
	static const char *const bases[] = {"/tmp", "/dev/shm", "/dev", "/run"};
	for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		snprintf(out, cap, "%s/cvbench-strength-XXXXXX", bases[i]);
		if (mkdtemp(out))
			return 0;
	}
	return -1;
}

static int child_status(pid_t pid)
{
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

/* In a throw-away child: optionally new user+mount ns, then a tmpfs on dir,
 * unmounted at once.  Exit 0: mounted; else the errno (capped). */
static int try_mount(const char *dir, int userns)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (userns) {
			uid_t uid = geteuid();
			gid_t gid = getegid();
			if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
				_exit(errno & 0x7f);
			char map[64];
			int fd = open("/proc/self/setgroups", O_WRONLY);
			if (fd >= 0) { ssize_t w = write(fd, "deny", 4); (void)w; close(fd); }
			snprintf(map, sizeof(map), "0 %u 1", uid);
			fd = open("/proc/self/uid_map", O_WRONLY);
			if (fd >= 0) { ssize_t w = write(fd, map, strlen(map)); (void)w; close(fd); }
			snprintf(map, sizeof(map), "0 %u 1", gid);
			fd = open("/proc/self/gid_map", O_WRONLY);
			if (fd >= 0) { ssize_t w = write(fd, map, strlen(map)); (void)w; close(fd); }
		} else if (unshare(CLONE_NEWNS) < 0) {
			/* no private mount namespace: try in place (unmounted at once) */
			if (mount("cvbench", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k") < 0)
				_exit(errno & 0x7f);
			umount2(dir, MNT_DETACH);
			_exit(0);
		}
		/* never propagate anything back to the parent's mounts */
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			_exit(errno & 0x7f);
		if (mount("cvbench", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k") < 0)
			_exit(errno & 0x7f);
		umount2(dir, MNT_DETACH);
		_exit(0);
	}
	return child_status(pid);
}

static void strength_battery(void)
{
	esc_open("sysrq_trigger", "/proc/sysrq-trigger", O_WRONLY, 0);
	esc_open("core_pattern", "/proc/sys/kernel/core_pattern", O_WRONLY, 0);
	char ra[300];
	if (find_release_agent(ra, sizeof(ra)))
		esc_open("release_agent", ra, O_WRONLY, 0);
	else
		esc("release_agent", 0, 0, "no_cgroup_v1_hierarchy_visible");
	int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
	esc("raw_socket", s >= 0, errno, NULL);
	if (s >= 0)
		close(s);
	esc_open("dev_kmsg_read", "/dev/kmsg", O_RDONLY, 1);
	esc_open("proc_kcore_read", "/proc/kcore", O_RDONLY, 1);

	char dir[128];
	if (scratch_dir(dir, sizeof(dir)) < 0) {
		esc("mknod_block", 0, 0, "no_writable_scratch_dir");
		esc("mount_tmpfs", 0, 0, "no_writable_scratch_dir");
		esc("userns_mount", 0, 0, "no_writable_scratch_dir");
	} else {
		char node[160];
		snprintf(node, sizeof(node), "%s/blk", dir);
		int r = mknod(node, S_IFBLK | 0600, makedev(7, 0));
		int e = errno;
		if (r == 0)
			unlink(node);
		esc("mknod_block", r == 0, e, NULL);
		r = try_mount(dir, 0);
		esc("mount_tmpfs", r == 0, r, r < 0 || r == 255 ? "child_failed" : NULL);
		r = try_mount(dir, 1);
		esc("userns_mount", r == 0, r, r < 0 || r == 255 ? "child_failed" : NULL);
		rmdir(dir);
	}

	if (getpid() == 1) {
		esc("ptrace_pid1", 0, 0, "the_probe_is_pid_1_of_its_namespace");
	} else {
		long r = ptrace(PTRACE_SEIZE, 1, NULL, NULL); /* SEIZE never stops the tracee */
		int e = errno;
		if (r == 0)
			ptrace(PTRACE_DETACH, 1, NULL, NULL);
		esc("ptrace_pid1", r == 0, e, NULL);
	}

	/* An fd the runtime left open (as in CVE-2024-21626): any fd above 2. */
	char leaked[512] = "";
	DIR *d = opendir("/proc/self/fd");
	if (!d) {
		esc("inherited_fd", 0, 0, "proc_self_fd_unreadable");
	} else {
		struct dirent *e;
		while ((e = readdir(d))) {
			int fd = atoi(e->d_name);
			if (e->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
				continue;
			char p[64], t[256];
			snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
			ssize_t n = readlink(p, t, sizeof(t) - 1);
			t[n > 0 ? n : 0] = 0;
			for (char *c = t; *c; c++)
				if (*c == ' ')
					*c = '_';
			size_t len = strlen(leaked);
			snprintf(leaked + len, sizeof(leaked) - len, "%s%d:%s", len ? "," : "", fd, t);
		}
		closedir(d);
		if (*leaked)
			printf("CVB esc_inherited_fd=succeeded:%s\n", leaked);
		else
			esc("inherited_fd", 0, EBADF, NULL);
	}

	/* Look up (never create) the session keyring. */
	long k = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
	esc("keyctl", k >= 0, errno, NULL);

	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 4;
	attr.max_entries = 1;
	int m = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
	esc("bpf_map_create", m >= 0, errno, NULL);
	if (m >= 0)
		close(m);
}

/* --no-battery: the host backend has no boundary, so it gets no escape
 * battery (its row reads "no boundary"); the reachability part still runs. */
static int cmd_strength(int argc, char **argv)
{
	int battery = 1;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--no-battery") != 0)
			return fail(argv[i], "usage: strength [--no-battery]");
		battery = 0;
	}
	int rc = cmd_self();
	if (rc)
		return rc;
	if (strength_syscalls() < 0)
		return fail("strength", strerror(errno));
	char names[1500] = "";
	int n = count_devices("/dev", 1, names, sizeof(names));
	printf("CVB dev_nodes=%d dev_list=%s\n", n, *names ? names : "-");
	strength_paths();
	if (battery)
		strength_battery();
	else
		printf("CVB battery=not_run:no_boundary\n");
	return 0;
}
/* ---- end strength ---- */

static void on_term(int sig)
{
	(void)sig;
	/* As pid 1 in a container, default SIGTERM is ignored: exit on it. */
	static const char msg[] = "CVB DONE rc=143\n";
	ssize_t w = write(1, msg, sizeof(msg) - 1);
	(void)w;
	_exit(143);
}

int main(int argc, char **argv)
{
	int rc;
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Handlers before READY: as pid 1 of a pid namespace the probe would
	 * silently drop a SIGTERM sent the moment it announced itself. */
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	/* Then at once the startup marker every backend times. */
	fputs("CVB READY\n", stdout);
	fflush(stdout);

	const char *cmd = argc > 1 ? argv[1] : "ready";
	if (strcmp(cmd, "ready") == 0)
		rc = 0;
	else if (strcmp(cmd, "ops") == 0)
		rc = cmd_ops(argc - 2, argv + 2);
	else if (strcmp(cmd, "mem") == 0)
		rc = cmd_mem(argc - 2, argv + 2);
	else if (strcmp(cmd, "sleep") == 0)
		rc = cmd_sleep(argc - 2, argv + 2);
	else if (strcmp(cmd, "self") == 0)
		rc = cmd_self();
	else if (strcmp(cmd, "strength") == 0)
		rc = cmd_strength(argc - 2, argv + 2);
	else if (strcmp(cmd, "net") == 0)
		rc = cmd_net(argc - 2, argv + 2);
	else {
		fprintf(stderr, "commands: ready | ops [--iters N] [--min-ms M] [--repeat R] [--cpu C] [--pair A,B] OP... | mem MiB [S] | sleep S | self | strength [--no-battery] | net ...\n");
		rc = fail(cmd, "unknown command");
	}
	printf("CVB DONE rc=%d\n", rc);
	return rc;
}
