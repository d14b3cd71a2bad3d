/* The per-thread scratch buffer every kernel of a library carves its temporaries from. */
#ifndef DCX_BASE_SCRATCH_H
#define DCX_BASE_SCRATCH_H

#include <stddef.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* This thread's scratch, at least nfloats long, 64-byte aligned; NULL if allocation fails. One buffer
 * per thread, grown and reused: a kernel call takes it once and carves it. */
float* dcx_scratch(size_t nfloats);

/* Free this thread's scratch buffer. */
DCX_API void dcx_release_scratch(void);

#ifdef __cplusplus
}
#endif

#endif
