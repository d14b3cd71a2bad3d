/* The optimizer updates of on-device training (pure C, float32): torch.optim's SGD (plain, momentum,
 * Nesterov, L2 weight decay), Adam and AdamW, each one fused pass over its tensors, in place.
 *
 * Each follows PyTorch's single-tensor step (torch.optim with foreach=False; dcx.optim's update) operation
 * by operation: the hyperparameters round to float32 where PyTorch casts its Python scalars, the bias
 * corrections are computed in double as Python does, and on FMA hardware (x86-64-v3, aarch64) a product
 * is fused into its addition exactly where PyTorch's CPU kernels fuse it. SGD's results and Adam's moments
 * are then PyTorch's bit for bit; Adam's parameter step differs by an ulp where PyTorch's float32 sqrt
 * (MKL's, on x86) is not correctly rounded. The portable x86 build rounds every product (within 1e-6
 * relative). */
#ifndef DCX_TRAINING_OPTIM_H
#define DCX_TRAINING_OPTIM_H

#include <stdint.h>

#include "base/isa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* In place: p -= lr * g. */
int training_sgd_update(float* p, const float* g, int64_t numel, float lr);

/* torch.optim.SGD (no dampening), one step in place: g += weight_decay * p; with momentum, buf = g on the
 * first step, else buf = momentum * buf + g, and the step is g + momentum * buf (nesterov) or buf;
 * p -= lr * step. buf is read and written only when momentum != 0 (it may be NULL otherwise). */
int training_sgd_momentum_update(float* p, const float* g, float* buf, int64_t numel, float lr, float momentum,
                                 int nesterov, float weight_decay, int first_step);

/* torch.optim.Adam, or AdamW when decoupled, one step in place (step counts from 1; exp_avg and exp_avg_sq
 * start at zero): AdamW first p *= 1 - lr * weight_decay, Adam g += weight_decay * p;
 * exp_avg += (1 - beta1) * (g - exp_avg); exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g;
 * p -= lr / (1 - beta1^step) * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps). */
int training_adam_update(float* p, const float* g, float* exp_avg, float* exp_avg_sq, int64_t numel, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int decoupled, int64_t step);

/* One step's float32 coefficients, as PyTorch rounds them (the entry points compute them). */
struct training_sgd_coeffs {
  float lr, momentum, weight_decay;
  int nesterov, first_step;
};
struct training_adam_coeffs {
  float decay;                   /* AdamW: 1 - lr * weight_decay; 1 for Adam */
  float weight_decay;            /* Adam's L2 term; 0 for AdamW */
  float lerp_coeff;              /* exp_avg.lerp_(g, 1 - beta1) as PyTorch computes a lerp: */
  int lerp_from_grad;            /* exp_avg + w * (g - exp_avg), or g + (w - 1) * (g - exp_avg) when w >= 0.5 */
  float beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps;
};

/* The function table each ISA build of optim-impl.h defines (the entry points above, after their checks). */
struct training_optim_isa {
  int (*sgd)(float* p, const float* g, int64_t numel, float lr);
  int (*sgd_momentum)(float* p, const float* g, float* buf, int64_t numel, const struct training_sgd_coeffs* k);
  int (*adam)(float* p, const float* g, float* exp_avg, float* exp_avg_sq, int64_t numel,
              const struct training_adam_coeffs* k);
};
DCX_ISA_TABLES(struct training_optim_isa, training_optim_isa);

#ifdef __cplusplus
}
#endif

#endif
