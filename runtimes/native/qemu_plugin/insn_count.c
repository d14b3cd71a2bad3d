/* A qemu-user TCG plugin that counts the guest instructions a program executes.
 *
 *   qemu-aarch64 -plugin libdcx_qemu_insn_count.so,out=COUNT.txt PROGRAM ...
 *
 * writes the total as one decimal line to COUNT.txt when the guest exits (without out=, it prints
 * "instructions N" on stderr). Emulated wall-clock time means nothing; instruction counts are
 * repeatable and comparable between builds.
 *
 * Debian's qemu-user 7.2 loads plugins but ships no qemu-plugin.h, so the few entry points used here
 * are declared below as that version's plugin API defines them (API version 1): the plugin exports
 * `qemu_plugin_version` and `qemu_plugin_install`; qemu exports the registration functions, which
 * resolve against the qemu binary when it loads the plugin.
 *
 * Counting: at translation, each block gets an execution callback carrying its instruction count;
 * the callback adds it atomically, so guest threads (one vCPU each in user mode) lose nothing. A
 * block left early by a fault still counts whole; such exits are rare and repeat identically.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define DCX_EXPORT __attribute__((visibility("default")))

/* ---- the qemu 7.2 plugin API (version 1), as far as this plugin uses it */
typedef uint64_t plugin_id_t;
struct qemu_plugin_tb; /* opaque translation block handle */

typedef struct {
  const char *target_name;
  struct {
    int min;
    int cur;
  } version;
  bool system_emulation;
  union {
    struct {
      int smp_vcpus;
      int max_vcpus;
    } system;
  };
} plugin_info_t;

enum plugin_cb_flags { PLUGIN_CB_NO_REGS = 0 };

typedef void (*tb_trans_cb_t)(plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb_t)(plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb_t cb, enum plugin_cb_flags flags,
                                          void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(plugin_id_t id, udata_cb_t cb, void *userdata);

#define PLUGIN_API_VERSION 1
/* ---- end of the API declarations */

DCX_EXPORT int qemu_plugin_version = PLUGIN_API_VERSION;

static uint64_t instructions;
static const char *out_path; /* qemu keeps argv alive for the plugin's lifetime */

static void on_block_exec(unsigned int vcpu_index, void *n_insns) {
  (void)vcpu_index;
  __atomic_fetch_add(&instructions, (uint64_t)(uintptr_t)n_insns, __ATOMIC_RELAXED);
}

static void on_block_translate(plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block_exec, PLUGIN_CB_NO_REGS,
                                       (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}

static void on_guest_exit(plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  const uint64_t total = __atomic_load_n(&instructions, __ATOMIC_RELAXED);
  if (!out_path) {
    fprintf(stderr, "instructions %llu\n", (unsigned long long)total);
    return;
  }
  /* write beside the target, then rename: a reader never sees a partial count */
  char tmp[4096];
  if (snprintf(tmp, sizeof(tmp), "%s.tmp", out_path) >= (int)sizeof(tmp)) return;
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  int ok = fprintf(f, "%llu\n", (unsigned long long)total) > 0;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, out_path) != 0) remove(tmp);
}

DCX_EXPORT int qemu_plugin_install(plugin_id_t id, const plugin_info_t *info, int argc, char **argv) {
  if (info->system_emulation) {
    fprintf(stderr, "dcx insn_count: user-mode emulation only (qemu-aarch64), not qemu-system\n");
    return -1;
  }
  for (int i = 0; i < argc; ++i) {
    if (strncmp(argv[i], "out=", 4) == 0 && argv[i][4] != '\0') {
      out_path = argv[i] + 4;
    } else {
      fprintf(stderr, "dcx insn_count: unknown argument '%s' (expected out=FILE)\n", argv[i]);
      return -1;
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_block_translate);
  qemu_plugin_register_atexit_cb(id, on_guest_exit, NULL);
  return 0;
}
