/* The dense gradient of an embedding table (pure C, float32). */
#ifndef DCX_TRAINING_EMBEDDING_H
#define DCX_TRAINING_EMBEDDING_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gw [num_weights, dim] from grad_y [n, dim] and the n row indices (int32 when index_is_int32, else
 * int64); rows equal to padding_idx get none (padding_idx < 0: none). */
int training_embedding_backward(const float* grad_y, const void* indices, int index_is_int32, int64_t n,
                                int64_t num_weights, int64_t dim, int64_t padding_idx, float* gw);

/* The function table each ISA build of embedding-impl.h defines (the entry point above, after its checks). */
struct training_embedding_isa {
  int (*backward)(const float* grad_y, const void* indices, int index_is_int32, int64_t n, int64_t num_weights,
                  int64_t dim, int64_t padding_idx, float* gw);
};
DCX_ISA_TABLES(struct training_embedding_isa, training_embedding_isa);

#ifdef __cplusplus
}
#endif

#endif
