/* Preloaded into the emulated phone's shell: an execve of an aarch64 ELF runs it under qemu-aarch64.
 *
 * This machine has no binfmt_misc entry for aarch64, so the shell could not start a
 * phone program by itself. The shim keeps argv[0] (qemu -0) and drops LD_PRELOAD from
 * the program's environment; it adds no library prefix, so a program starts only if
 * it would start on a phone (static, or through a loader it brings along).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EM_AARCH64_MACHINE 183

static int is_aarch64_elf(const char *path) {
    unsigned char header[20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, header, sizeof header);
    close(fd);
    if (n != (ssize_t)sizeof header || memcmp(header, "\x7f" "ELF", 4) != 0) return 0;
    return (header[18] | (header[19] << 8)) == EM_AARCH64_MACHINE;
}

int execve(const char *path, char *const argv[], char *const envp[]) {
    int (*real_execve)(const char *, char *const[], char *const[]) = dlsym(RTLD_NEXT, "execve");
    const char *qemu = getenv("DCX_EMULATOR_QEMU");
    if (qemu == NULL || !is_aarch64_elf(path)) return real_execve(path, argv, envp);

    size_t argc = 0, envc = 0;
    while (argv[argc]) argc++;
    while (envp[envc]) envc++;
    char **qemu_argv = calloc(argc + 5, sizeof(char *));
    char **guest_envp = calloc(envc + 1, sizeof(char *));
    if (qemu_argv == NULL || guest_envp == NULL) {
        errno = ENOMEM;
        return -1;
    }
    size_t i = 0;
    qemu_argv[i++] = (char *)qemu;
    qemu_argv[i++] = "-0";
    qemu_argv[i++] = argc ? argv[0] : (char *)path;
    qemu_argv[i++] = (char *)path;
    for (size_t a = 1; a < argc; a++) qemu_argv[i++] = argv[a];
    size_t j = 0;
    for (size_t e = 0; e < envc; e++) {
        if (strncmp(envp[e], "LD_PRELOAD=", 11) != 0 && strncmp(envp[e], "DCX_EMULATOR_QEMU=", 18) != 0) {
            guest_envp[j++] = envp[e];
        }
    }
    return real_execve(qemu, qemu_argv, guest_envp);
}
