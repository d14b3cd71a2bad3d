/* The dense gradient of an embedding table (one build per ISA; see training-impl.h). */

static int impl_embedding_backward(const float* gy, const void* idx, int is32, int64_t n, int64_t num, int64_t dim,
                                   int64_t padding_idx, float* gw) {
  for (int64_t i = 0; i < n; i++) {
    const int64_t row = is32 ? ((const int32_t*)idx)[i] : ((const int64_t*)idx)[i];
    if (row < 0 || row >= num) return DCX_EINDEX;
  }
  memset(gw, 0, sizeof(float) * (size_t)(num * dim));
  for (int64_t i = 0; i < n; i++) {
    const int64_t row = is32 ? ((const int32_t*)idx)[i] : ((const int64_t*)idx)[i];
    if (row != padding_idx) add_row(gw + row * dim, gy + i * dim, dim);
  }
  return DCX_OK;
}

const struct training_embedding_isa DCX_ISA_TABLE(training_embedding_isa) = {impl_embedding_backward};
