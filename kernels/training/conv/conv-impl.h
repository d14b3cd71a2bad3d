/* The convolution kernels (one build per ISA; see training-impl.h): each kind in its own file, and here
 * the dispatch that picks one (kinds.h), the general implicit GEMM for the rest. */
#include "training/conv/kinds.h"
#include "training/conv/general-impl.h"
#include "training/conv/stage-impl.h"
#include "training/conv/depthwise-impl.h"
#include "training/conv/depthwise3x3-impl.h"
#include "training/conv/stem3x3-impl.h"
#include "training/conv/pointwise-impl.h"

/* y = the output stage o of conv(x, w) (o->bias_m: the convolution's bias), raw = conv + bias when
 * raw is given (o->out_delta is set here). */
static int conv_forward(const struct training_conv2d* s, const float* x, const float* w, const struct gemm_out* o, float* raw,
                        float* y) {
  if (is_dw3x3(s)) return dw3x3_forward(s, x, w, o, raw, y);
  if (is_stem3x3(s)) return stem3x3_forward(s, x, w, o, raw, y);
  if (is_depthwise(s)) return depthwise_forward(s, x, w, o, raw, y);
  if (is_pointwise(s)) return pointwise_forward(s, x, w, o, raw, y);
  const struct conv_dims d = conv_dims(s);
  const size_t pa = packed_a_size(d.opg, d.kg), ws_n = gemm_workspace(d.opg, d.len);
  const size_t ntab = (size_t)(s->groups * d.kg);
  float* ws = dcx_scratch(2 * ntab + ws_n + pa * (size_t)s->groups + phase_floats(&d) + (size_t)(d.opg * d.len));
  if (!ws) return DCX_ENOMEM;
  float** rows = (float**)(void*)ws; /* the scratch is 64-byte aligned */
  float* gws = ws + 2 * ntab;
  float* a_full = gws + ws_n;
  float* ph = a_full + pa * (size_t)s->groups;
  float* tmp = ph + phase_floats(&d);
  for (int64_t g = 0; g < s->groups; g++) { /* weights packed once, reused by every chunk */
    struct strided sw = {w + g * d.opg * d.kg, d.kg, 1};
    pack_a_all(d.opg, d.kg, strided_a(&sw), a_full + g * pa);
  }
  for (int64_t b0 = 0; b0 < s->n; b0 += d.chunk) {
    const int64_t nb = min64(d.chunk, s->n - b0), len = nb * d.grid;
    split_phases(s, &d, x + b0 * s->c_in * d.hw, nb, ph);
    tap_rows(s, &d, nb, ph, rows);
    for (int64_t g = 0; g < s->groups; g++) {
      gemm_run(d.opg, len, d.kg, (struct operand){0}, a_full + g * pa, row_table_b((const float* const*)rows + g * d.kg),
               tmp, len, 0, &plain_out, gws);
      for (int64_t b = 0; b < nb; b++)
        for (int64_t oc = 0; oc < d.opg; oc++) {
          const int64_t ch = g * d.opg + oc, at = ((b0 + b) * s->c_out + ch) * d.p;
          const float* t = tmp + oc * len + b * d.grid;
          for (int64_t r = 0; r < d.oh; r++)
            out_row(t + r * d.pc, d.ow, ch, o, raw ? raw + at + r * d.ow : NULL, y + at + r * d.ow);
        }
    }
  }
  return DCX_OK;
}

static int impl_conv2d_forward(const struct training_conv2d* s, const float* x, const float* w, const float* bias,
                               int relu, float* y) {
  const struct gemm_out o = relu_out_stage(bias, NULL, relu);
  return conv_forward(s, x, w, &o, NULL, y);
}

static int conv_backward(const struct training_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                         float* gx, float* gw, float* gb) {
  if (is_dw3x3(s)) return dw3x3_backward(s, src, x, w, gx, gw, gb);
  if (is_depthwise(s)) return depthwise_backward(s, src, x, w, gx, gw, gb);
  if (is_pointwise(s)) return pointwise_backward(s, src, x, w, gx, gw, gb);
  const struct conv_dims d = conv_dims(s);
  const size_t ntab = (size_t)(s->groups * d.kg);
  const size_t ws_n = gx ? gemm_workspace(d.kg, d.len) : 0, pa = gx ? packed_a_size(d.kg, d.opg) : 0;
  float* ws = dcx_scratch(2 * ntab + ws_n + pa * (size_t)s->groups + 2 * phase_floats(&d) + (size_t)(s->c_out * d.len));
  if (!ws) return DCX_ENOMEM;
  float** rows = (float**)(void*)ws;
  float* gws = ws + 2 * ntab;
  float* wt = gws + ws_n;
  float* ph = wt + pa * (size_t)s->groups;  /* input phases (weight gradient) */
  float* gph = ph + phase_floats(&d);       /* gradient phases (input gradient) */
  float* gg = gph + phase_floats(&d);       /* the output gradient on the grid */
  if (gb) memset(gb, 0, sizeof(float) * (size_t)s->c_out);
  if (gx)
    for (int64_t g = 0; g < s->groups; g++) { /* A(k, o) = W[o, k]: the weights transposed, packed once */
      struct strided sw = {w + g * d.opg * d.kg, 1, d.kg};
      pack_a_all(d.kg, d.opg, strided_a(&sw), wt + g * pa);
    }
  for (int64_t b0 = 0; b0 < s->n; b0 += d.chunk) {
    const int64_t nb = min64(d.chunk, s->n - b0), len = nb * d.grid;
    memset(gg, 0, sizeof(float) * (size_t)(s->c_out * len));
    for (int64_t b = 0; b < nb; b++)
      for (int64_t o = 0; o < s->c_out; o++) {
        const int64_t at = ((b0 + b) * s->c_out + o) * d.p;
        float* dst = gg + o * len + b * d.grid;
        for (int64_t r = 0; r < d.oh; r++) grad_row(src, at + r * d.ow, d.ow, o, dst + r * d.pc);
      }
    if (gb)
      for (int64_t o = 0; o < s->c_out; o++) gb[o] += sum_row(gg + o * len, len);
    if (gw) {
      split_phases(s, &d, x + b0 * s->c_in * d.hw, nb, ph);
      tap_rows(s, &d, nb, ph, rows);
      for (int64_t g = 0; g < s->groups; g++) /* gw [opg, kg] += gg [opg, len] . views^T */
        gemm_dot(d.opg, d.kg, len, gg + g * d.opg * len, len, NULL, 0, (const float* const*)rows + g * d.kg,
                 gw + g * d.opg * d.kg, d.kg, b0 > 0, NULL, NULL, 0);
    }
    if (gx) {
      memset(gph, 0, sizeof(float) * phase_floats(&d));
      tap_rows(s, &d, nb, gph, rows);
      for (int64_t g = 0; g < s->groups; g++) { /* gph views += W^T gg: the GEMM adds straight into them */
        struct strided sg = {gg + g * d.opg * len, len, 1};
        gemm_run_rows(d.kg, len, d.opg, (struct operand){0}, wt + g * pa, strided_b(&sg), NULL, 0, rows + g * d.kg, 1,
                      &plain_out, gws);
      }
      merge_phases(s, &d, gph, nb, gx + b0 * s->c_in * d.hw);
    }
  }
  return DCX_OK;
}

static int impl_conv2d_backward(const struct training_conv2d* s, const float* gy, const float* x, const float* w,
                                const float* relu_out, float* gx, float* gw, float* gb) {
  const struct grad_src src = {gy, relu_out, 0.0f, INFINITY, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
  return conv_backward(s, &src, x, w, gx, gw, gb);
}

const struct training_conv_isa DCX_ISA_TABLE(training_conv_isa) = {impl_conv2d_forward, impl_conv2d_backward};
