/* cvbench-stage: what stage.c and program.c share. */
#ifndef CVBENCH_STAGE_H
#define CVBENCH_STAGE_H
#include <stddef.h>

/* one line "E<why>" on the status fd, then _exit(127): the Python child's report */
void fail(const char *what, const char *path) __attribute__((noreturn));

/* The init's kernel work, recorded by runtime/stage/program.py: read it all
   from fd, then run it in two parts (the first up to the "|" op). */
struct program {
    unsigned char *buf;
    size_t len, pos;
    int root_fd;
};
void program_read(struct program *p, int fd);
void program_run(struct program *p);  /* runs up to "|" or the end */

#endif
