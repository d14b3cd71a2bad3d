/* The SGD update (one build per ISA; see training-impl.h). */

static int impl_sgd_update(float* p, const float* g, int64_t n, float lr) {
  const v8f vlr = splat8(lr);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) st8(p + i, ld8(p + i) - vlr * ld8(g + i));
  for (; i < n; i++) p[i] -= lr * g[i];
  return DCX_OK;
}

const struct training_sgd_isa DCX_ISA_TABLE(training_sgd_isa) = {impl_sgd_update};
