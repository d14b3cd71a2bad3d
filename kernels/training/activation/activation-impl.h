/* The activations' backward: a clamp's mask and softmax (one build per ISA; see training-impl.h). */

static int impl_threshold_backward(const float* gy, const float* x, int64_t n, float lo, float hi, float* gx) {
  threshold_mask(gy, x, n, lo, hi, gx);
  return DCX_OK;
}
static int impl_softmax_backward(const float* gy, const float* y, int64_t rows, int64_t cols, int log_sm,
                                 float* gx) {
  for (int64_t r = 0; r < rows; r++) {
    const float* g = gy + r * cols;
    const float* yr = y + r * cols;
    float* o = gx + r * cols;
    if (log_sm) {
      const float s = sum_row(g, cols);
      for (int64_t j = 0; j < cols; j++) o[j] = g[j] - expf(yr[j]) * s;
    } else {
      const float s = dot_row(g, yr, cols);
      for (int64_t j = 0; j < cols; j++) o[j] = yr[j] * (g[j] - s);
    }
  }
  return DCX_OK;
}

const struct training_activation_isa DCX_ISA_TABLE(training_activation_isa) = {impl_threshold_backward, impl_softmax_backward};
