/* A STAND-IN for dcx_runner, cross-compiled for aarch64 by the tests so the adb target is proven
 * without the real runner. It takes the runner's flags (--model M --outputs O, others ignored)
 * and does what a runner does on the device side of a run, or fails as a runner can, chosen by
 * the first word of the model file:
 *   crash    killed by SIGSEGV
 *   fail     a message on stderr, exit status 3
 *   slow     a line, 2 s of sleep, another line
 *   garbage  a line that is not JSON
 *   else     --outputs gets a safetensors file with one U8 tensor "output/reversed" (the model's
 *            bytes, reversed); stdout gets one JSON line with argv and the model's size.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static unsigned char *read_file(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(*size + 1);
    *size = (long)fread(data, 1, *size, f);
    data[*size] = 0;
    fclose(f);
    return data;
}

static int write_safetensors(const char *path, const unsigned char *data, long size) {
    char header[160];
    int n = snprintf(header, sizeof header,
                     "{\"output/reversed\":{\"dtype\":\"U8\",\"shape\":[%ld],\"data_offsets\":[0,%ld]}}", size, size);
    while (n % 8) header[n++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned long long length = (unsigned long long)n;
    for (int i = 0; i < 8; i++) fputc((int)(length >> (8 * i)) & 0xff, f);
    fwrite(header, 1, n, f);
    for (long i = size - 1; i >= 0; i--) fputc(data[i], f);
    return fclose(f);
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *outputs_path = NULL;
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--model") == 0) model_path = argv[i + 1];
        if (strcmp(argv[i], "--outputs") == 0) outputs_path = argv[i + 1];
    }
    long size = 0;
    unsigned char *model = model_path ? read_file(model_path, &size) : NULL;
    if (!model) {
        fprintf(stderr, "dcx_runner: --model %s: cannot read it\n", model_path ? model_path : "(missing)");
        return 3;
    }
    const char *word = (const char *)model;
    if (strncmp(word, "crash", 5) == 0) raise(SIGSEGV);
    if (strncmp(word, "fail", 4) == 0) {
        fprintf(stderr, "dcx_runner: --model %s: not an ExecuTorch program\n", model_path);
        return 3;
    }
    if (strncmp(word, "slow", 4) == 0) {
        printf("started\n");
        fflush(stdout);
        sleep(2);
        printf("finished\n");
        return 0;
    }
    if (strncmp(word, "garbage", 7) == 0) {
        printf("loaded in 3 ms, everything fine\n");
        return 0;
    }
    if (outputs_path && write_safetensors(outputs_path, model, size) != 0) {
        perror(outputs_path);
        return 4;
    }
    printf("{\"runner\": \"stand-in\", \"argv\": [");
    for (int i = 1; i < argc; i++) {
        if (i > 1) printf(", ");
        json_string(argv[i]);
    }
    printf("], \"model_bytes\": %ld}\n", size);
    return 0;
}
