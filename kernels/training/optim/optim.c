/* The checked entry points of the optimizer updates, and each step's coefficients as PyTorch computes
 * them (Python doubles, cast to float32 where its kernels take them); the kernels are in optim-impl.h. */
#include <math.h>

#include "base/vec.h"
#include "training/optim/optim.h"

int training_sgd_update(float* p, const float* g, int64_t numel, float lr) {
  DCX_REQUIRE(numel >= 0, DCX_EINVAL_SHAPE);
  if (numel == 0) return DCX_OK;
  DCX_REQUIRE(p && g, DCX_EINVAL_PTR);
  return DCX_ISA_PICK(training_optim_isa)->sgd(p, g, numel, lr);
}

int training_sgd_momentum_update(float* p, const float* g, float* buf, int64_t numel, float lr, float momentum,
                                 int nesterov, float weight_decay, int first_step) {
  DCX_REQUIRE(numel >= 0, DCX_EINVAL_SHAPE);
  if (numel == 0) return DCX_OK;
  DCX_REQUIRE(p && g && (buf || momentum == 0), DCX_EINVAL_PTR);
  const struct training_sgd_coeffs k = {lr, momentum, weight_decay, nesterov && momentum != 0, first_step};
  return DCX_ISA_PICK(training_optim_isa)->sgd_momentum(p, g, buf, numel, &k);
}

int training_adam_update(float* p, const float* g, float* exp_avg, float* exp_avg_sq, int64_t numel, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int decoupled, int64_t step) {
  DCX_REQUIRE(numel >= 0 && step >= 1, DCX_EINVAL_SHAPE);
  if (numel == 0) return DCX_OK;
  DCX_REQUIRE(p && g && exp_avg && exp_avg_sq, DCX_EINVAL_PTR);
  const float w = (float)(1 - beta1);
  const int from_grad = !(fabsf(w) < 0.5f);  /* PyTorch's lerp: the formula that is exact at its end */
  const struct training_adam_coeffs k = {
      .decay = decoupled ? (float)(1 - DCX_ROUNDED(lr * weight_decay)) : 1.0f,
      .weight_decay = decoupled ? 0.0f : (float)weight_decay,
      .lerp_coeff = from_grad ? w - 1.0f : w,
      .lerp_from_grad = from_grad,
      .beta2 = (float)beta2,
      .one_minus_beta2 = (float)(1 - beta2),
      .step_size = (float)(lr / (1 - pow(beta1, (double)step))),
      .bias_correction2_sqrt = (float)sqrt(1 - pow(beta2, (double)step)),
      .eps = (float)eps,
  };
  return DCX_ISA_PICK(training_optim_isa)->adam(p, g, exp_avg, exp_avg_sq, numel, &k);
}
