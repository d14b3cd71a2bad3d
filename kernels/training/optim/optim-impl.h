/* The optimizer updates (one build per ISA; see training-impl.h). Each step is written once, on 8 lanes,
 * in PyTorch's order of operations; a product PyTorch adds in the same kernel (add with alpha, lerp,
 * addcmul) is left to -ffp-contract=fast to fuse, as its vectorized kernels do, and one it rounds before
 * adding (mul_ then add_) goes through DCX_ROUNDED. The last numel % 8 elements run on zero-padded copies.
 *
 * Self-contained: it is also the whole of dcx_optim_kernels, the library the native runner links. */
#include <math.h>
#include <string.h>

#include "base/vec.h"
#include "training/optim/optim.h"

static int impl_sgd_update(float* p, const float* g, int64_t n, float lr) {
  const v8f vlr = splat8(lr);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) st8(p + i, ld8(p + i) - vlr * ld8(g + i));
  for (; i < n; i++) p[i] -= lr * g[i];
  return DCX_OK;
}

/* torch.optim.SGD on 8 elements; buf only with momentum */
DCX_INLINE void sgd_momentum8(float* p, const float* g, float* buf, const struct training_sgd_coeffs* k) {
  const v8f pv = ld8(p);
  v8f gv = ld8(g);
  if (k->weight_decay != 0) gv = gv + splat8(k->weight_decay) * pv;
  if (k->momentum != 0) {
    const v8f b = k->first_step ? gv : DCX_ROUNDED(ld8(buf) * splat8(k->momentum)) + gv;
    st8(buf, b);
    gv = k->nesterov ? gv + splat8(k->momentum) * b : b;
  }
  st8(p, pv - splat8(k->lr) * gv);
}

static int impl_sgd_momentum_update(float* p, const float* g, float* buf, int64_t n,
                                    const struct training_sgd_coeffs* coeffs) {
  const struct training_sgd_coeffs k[1] = {*coeffs};  /* a local copy: no store can change it */
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) sgd_momentum8(p + i, g + i, buf ? buf + i : NULL, k);
  if (i == n) return DCX_OK;
  float tp[8] = {0}, tg[8] = {0}, tb[8] = {0};
  const size_t bytes = sizeof(float) * (size_t)(n - i);
  memcpy(tp, p + i, bytes);
  memcpy(tg, g + i, bytes);
  if (buf) memcpy(tb, buf + i, bytes);
  sgd_momentum8(tp, tg, tb, k);
  memcpy(p + i, tp, bytes);
  if (buf) memcpy(buf + i, tb, bytes);
  return DCX_OK;
}

DCX_INLINE v8f sqrt8(v8f v) {
  for (int j = 0; j < 8; j++) v[j] = sqrtf(v[j]);
  return v;
}

/* torch.optim.Adam / AdamW on 8 elements */
DCX_INLINE void adam8(float* p, const float* g, float* m, float* v, const struct training_adam_coeffs* k) {
  v8f pv = ld8(p), gv = ld8(g);
  if (k->decay != 1.0f) pv = DCX_ROUNDED(pv * splat8(k->decay));
  if (k->weight_decay != 0) gv = gv + splat8(k->weight_decay) * pv;
  /* exp_avg.lerp_(g, 1 - beta1), as ATen's vectorized lerp: one fused multiply-add onto a base picked by
   * mask (a branch would let the compiler split the multiply from the add) */
  const v8f mv = ld8(m);
  const v8i from_grad = (v8i){0} - k->lerp_from_grad;
  const v8f base = (v8f)(((v8i)gv & from_grad) | ((v8i)mv & ~from_grad));
  const v8f mn = splat8(k->lerp_coeff) * (gv - mv) + base;
  const v8f vn = DCX_ROUNDED(ld8(v) * splat8(k->beta2)) + splat8(k->one_minus_beta2) * gv * gv;
  const v8f denom = sqrt8(vn) / splat8(k->bias_correction2_sqrt) + splat8(k->eps);
  st8(m, mn);
  st8(v, vn);
  st8(p, pv - splat8(k->step_size) * mn / denom);
}

static int impl_adam_update(float* p, const float* g, float* m, float* v, int64_t n,
                            const struct training_adam_coeffs* coeffs) {
  const struct training_adam_coeffs k[1] = {*coeffs};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) adam8(p + i, g + i, m + i, v + i, k);
  if (i == n) return DCX_OK;
  float tp[8] = {0}, tg[8] = {0}, tm[8] = {0}, tv[8] = {0};
  const size_t bytes = sizeof(float) * (size_t)(n - i);
  memcpy(tp, p + i, bytes);
  memcpy(tg, g + i, bytes);
  memcpy(tm, m + i, bytes);
  memcpy(tv, v + i, bytes);
  adam8(tp, tg, tm, tv, k);
  memcpy(p + i, tp, bytes);
  memcpy(m + i, tm, bytes);
  memcpy(v + i, tv, bytes);
  return DCX_OK;
}

const struct training_optim_isa DCX_ISA_TABLE(training_optim_isa) = {impl_sgd_update, impl_sgd_momentum_update,
                                                                      impl_adam_update};
