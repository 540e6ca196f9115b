/*
 * The bench's second client, plain C with blocking sockets, so that a
 * quirk of Go's runtime (its threads spin a while before they sleep) cannot
 * decide a result on its own. netbench builds it with the system's cc.
 *
 *   pingpong rtt HOST PORT N WARM  median and 10th percentile of N 1-byte
 *                                   round trips on one TCP_NODELAY
 *                                   connection, after WARM more, in
 *                                   microseconds
 *   pingpong conn HOST PORT C SECS C threads looping connect, write 1
 *                                   byte, read the echo, close; prints
 *                                   connections per second
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static double deadline;
static long counts[64];

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int rtt(int n, int warm) {
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
		perror("pingpong: connect");
		return 1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	double *d = malloc(sizeof(double) * n);
	char b = 1;
	for (int i = 0; i < n + warm; i++) {
		double t0 = now();
		if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1) {
			perror("pingpong: round trip");
			return 1;
		}
		if (i >= warm)
			d[i - warm] = (now() - t0) * 1e6;
	}
	qsort(d, n, sizeof(double), cmp);
	printf("%.2f %.2f\n", d[n / 2], d[n / 10]);
	return 0;
}

static void *connLoop(void *arg) {
	long *n = arg;
	char b = 1;
	while (now() < deadline) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			continue;
		if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
		    write(fd, &b, 1) == 1 && read(fd, &b, 1) == 1)
			(*n)++;
		close(fd);
	}
	return NULL;
}

static int conns(int c, int secs) {
	pthread_t t[64];
	if (c < 1 || c > 64)
		return 2;
	double start = now();
	deadline = start + secs;
	for (int i = 0; i < c; i++)
		pthread_create(&t[i], NULL, connLoop, &counts[i]);
	long total = 0;
	for (int i = 0; i < c; i++) {
		pthread_join(t[i], NULL);
		total += counts[i];
	}
	printf("%.1f\n", total / (now() - start));
	return total > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
	if (argc != 6) {
		fprintf(stderr, "usage: pingpong rtt|conn HOST PORT N|C WARM|SECS\n");
		return 2;
	}
	addr.sin_family = AF_INET;
	addr.sin_port = htons(atoi(argv[3]));
	if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1)
		return 2;
	if (strcmp(argv[1], "rtt") == 0)
		return rtt(atoi(argv[4]), atoi(argv[5]));
	return conns(atoi(argv[4]), atoi(argv[5]));
}
