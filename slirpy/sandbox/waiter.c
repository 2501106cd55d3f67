/* slirpy-waiter: the two processes a light `slirpy run` leaves running while its command runs,
 * as one small C program instead of a Python interpreter and `cat`.
 *
 * A light run (`--network none|host|sandbox:NAME`, a named network's member: slirpy/plainrun.py)
 * serves no network of its own.  Once its command runs, all that is left to do is what
 * slirpy/sandbox/waiter.py does, and what the sandbox's PID 1 does; an idle member of a network
 * costs exactly these two processes, so they should cost next to nothing.  setup.py builds this
 * file (linked statically when the C library allows: a dynamically linked program maps the
 * whole libc) into slirpy/sandbox/slirpy-waiter; slirpy/nativewaiter.py says where it is and
 * whether to use it.  Without it (no C compiler, or SLIRPY_PURE=1) slirpy runs waiter.py and
 * `cat` instead, with the same behaviour.
 *
 *   slirpy-waiter wait SUP CMD INIT KEEP_FD NAME|- SANDBOXES_DIR LOCK_FILE
 *       What the light run's `slirpy run` process exec()s once the command runs (the pids are
 *       its children by then: it is a child subreaper and the supervisor SUP has handed the
 *       command CMD and PID 1 INIT over).  Reaps SUP; passes on each forwarded signal *sent*
 *       to it (kill(2): si_code <= 0; one the terminal generated reached the command's process
 *       group already) to CMD until CMD exits; closes KEEP_FD (PID 1 reads EOF and exits),
 *       kills and reaps INIT if it still lives; removes the sandbox's registry record
 *       (slirpy/registry.py: under the flock of LOCK_FILE, SANDBOXES_DIR/NAME.json if its
 *       "pid" is ours, then NAME.lock and NAME.sock; "-": no record); exits with CMD's exit
 *       code, or 128+N if a signal N killed it.  The signal mask it inherits is kept (signals
 *       that arrived before the exec stay pending and are passed on).
 *
 *   slirpy-waiter hold
 *       The sandbox's PID 1, exec()ed with the keep pipe on stdin and SIGCHLD ignored (so the
 *       kernel reaps every orphan it inherits): reads until end of file, when every holder of
 *       the pipe's write end is gone, and exits, which ends the PID namespace.  As PID 1 it
 *       ignores every signal from inside its namespace that it has no handler for.
 *
 * Exit status 2 and one line on stderr for bad arguments.  Only the C library, no allocation.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The signals passed on to the command: slirpy.sandbox.command.FORWARDED_SIGNALS (a unit test
 * sends each of them through this program). */
static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

static int usage(const char *why)
{
    fprintf(stderr, "slirpy-waiter: %s\nusage: slirpy-waiter wait SUP CMD INIT KEEP_FD NAME|- "
            "SANDBOXES_DIR LOCK_FILE\n       slirpy-waiter hold\n", why);
    return 2;
}

static int hold(void)
{
    char buf[512];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        return 0;
    }
}

/* A decimal int in [lo, INT_MAX], or -1. */
static int number(const char *s, int lo)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > INT_MAX)
        return -1;
    return (int)v;
}

/* A wait status in shell convention: the exit code, or 128+N when killed by signal N. */
static int exit_code(int status)
{
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* Reap what has exited; 1 and *code once CMD has.  INIT's death is noted in *init_alive. */
static int reap(pid_t cmd, pid_t init, int *init_alive, int *code)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0) {           /* no child at all: the command is not ours (cannot happen) */
            *init_alive = 0;
            *code = 1;
            return 1;
        }
        if (pid == 0)
            return 0;
        if (pid == cmd) {
            *code = exit_code(status);
            return 1;
        }
        if (pid == init)
            *init_alive = 0;     /* the namespace is gone; the command dies with it */
    }
}

static int wait_command(pid_t sup, pid_t cmd, pid_t init, int keep_fd)
{
    sigset_t mask;
    siginfo_t info;
    int code = 1, init_alive = 1;
    size_t i;

    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    for (i = 0; i < sizeof FORWARDED / sizeof FORWARDED[0]; i++)
        sigaddset(&mask, FORWARDED[i]);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    while (waitpid(sup, NULL, 0) < 0 && errno == EINTR)
        ;                        /* it exits right after forking the command */
    while (!reap(cmd, init, &init_alive, &code)) {
        if (sigwaitinfo(&mask, &info) < 0)
            continue;
        if (info.si_signo != SIGCHLD && info.si_code <= 0)
            kill(cmd, info.si_signo);   /* not reaped yet: the pid is still the command's */
    }
    close(keep_fd);              /* PID 1 reads EOF and exits: the kernel ends its namespace */
    if (init > 0 && init_alive && kill(init, SIGKILL) == 0)   /* 0: no PID 1 known */
        while (waitpid(init, NULL, 0) < 0 && errno == EINTR)
            ;
    return code;
}

static int valid_name(const char *name)
{
    size_t n = strlen(name), i;
    if (n == 0 || n > 63)
        return 0;
    for (i = 0; i < n; i++) {
        char c = name[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
            return 0;
    }
    return 1;
}

/* The "pid" of the record NAME.json in dirfd (json.dumps writes it as `"pid": N` near the
 * start, after the name: a quoted "pid" followed by a colon is the key, not a name), or -1. */
static long record_pid(int dirfd, const char *name)
{
    char path[80], buf[4096];
    const char *key, *at;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "%s.json", name);
    fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    for (at = buf;; at = key) {
        key = strstr(at, "\"pid\"");
        if (key == NULL)
            return -1;
        key += 5;
        while (*key == ' ')
            key++;
        if (*key == ':')
            break;
    }
    key++;
    while (*key == ' ')
        key++;
    if (*key < '0' || *key > '9')
        return -1;
    return strtol(key, NULL, 10);
}

/* slirpy.registry.unregister(NAME, our pid), the same files under the same lock. */
static void unregister(const char *name, const char *dir, const char *lock_file)
{
    static const char *const suffixes[] = {".json", ".lock", ".sock"};
    char path[80];
    int lock, dirfd;
    size_t i;

    if (!valid_name(name))
        return;
    lock = open(lock_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0)
        return;
    while (flock(lock, LOCK_EX) < 0) {
        if (errno != EINTR) {
            close(lock);
            return;
        }
    }
    dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd >= 0) {
        if (record_pid(dirfd, name) == (long)getpid()) {
            for (i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
                snprintf(path, sizeof path, "%s%s", name, suffixes[i]);
                unlinkat(dirfd, path, 0);
            }
        }
        close(dirfd);
    }
    close(lock);                 /* releases the flock */
}

int main(int argc, char **argv)
{
    int sup, cmd, init, keep_fd, code;

    if (argc == 2 && strcmp(argv[1], "hold") == 0)
        return hold();
    if (argc != 9 || strcmp(argv[1], "wait") != 0)
        return usage("bad arguments");
    sup = number(argv[2], 1);
    cmd = number(argv[3], 1);
    init = number(argv[4], 0);
    keep_fd = number(argv[5], 0);
    if (sup < 0 || cmd < 0 || init < 0 || keep_fd < 0)
        return usage("SUP, CMD, INIT and KEEP_FD are numbers (SUP and CMD > 0)");
    code = wait_command(sup, cmd, init, keep_fd);
    if (strcmp(argv[6], "-") != 0)
        unregister(argv[6], argv[7], argv[8]);
    return code;
}
