/* The checked entry point of the embedding gradient; the kernel is in embedding-impl.h. */
#include "training/embedding/embedding.h"

int training_embedding_backward(const float* grad_y, const void* indices, int index_is_int32, int64_t n,
                                int64_t num_weights, int64_t dim, int64_t padding_idx, float* gw) {
  DCX_REQUIRE(n >= 0 && num_weights >= 1 && dim >= 1, DCX_EINVAL_SHAPE);
  DCX_REQUIRE(gw && (n == 0 || (grad_y && indices)), DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_embedding_isa)
      ->backward(grad_y, indices, index_is_int32 != 0, n, num_weights, dim, padding_idx, gw);
}
