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
	else if (strcmp(cmd, "net") == 0)
		rc = cmd_net(argc - 2, argv + 2);
	else {
		fprintf(stderr, "commands: ready | ops [--iters N] [--min-ms M] [--repeat R] [--cpu C] [--pair A,B] OP... | mem MiB [S] | sleep S | self\n");
		rc = fail(cmd, "unknown command");
	}
	printf("CVB DONE rc=%d\n", rc);
	return rc;
}
