/* What every dcx kernel returns, and what its library exports.
 *
 * Kernels are single-threaded and thread-safe, never abort and return DCX_OK or one of these codes.
 * DCX_API marks what a library exports (for the ATen and ExecuTorch adapters and Python's ctypes):
 * protected, so that two dcx libraries loaded into one process each keep calling their own copy. */
#ifndef DCX_BASE_STATUS_H
#define DCX_BASE_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

#define DCX_OK 0
#define DCX_EINVAL_SHAPE 1 /* a size < 1, or sizes that do not fit together */
#define DCX_EINVAL_PTR 2   /* a required pointer is NULL */
#define DCX_ENOMEM 3       /* scratch allocation failed */
#define DCX_EINDEX 4       /* an index (class target, embedding row, pooling index) out of range */
#define DCX_EINVAL_ISA 5   /* dcx_set_isa: that implementation is not in this build or CPU */

#define DCX_API __attribute__((visibility("protected")))

/* One line for a status code. */
DCX_API const char* dcx_strerror(int code);

/* In a checked entry point: return code unless cond holds. */
#define DCX_REQUIRE(cond, code) \
  do {                          \
    if (!(cond)) return code;   \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif
