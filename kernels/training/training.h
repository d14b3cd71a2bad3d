/* The training kernels: the forward and backward ops that dominate on-device training programs, as pure
 * C (no PyTorch or ExecuTorch dependency), one folder per family. float32, contiguous, NCHW for images.
 * Every function is single-threaded and thread-safe (the base's per-thread scratch) and returns DCX_OK or
 * a DCX_E* code (base/status.h); it never aborts. The build that runs (portable, x86-64-v3, NEON) is the
 * library's one ISA choice (base/isa.h). */
#ifndef DCX_TRAINING_H
#define DCX_TRAINING_H

#include "base/isa.h"
#include "base/status.h"
#include "training/activation/activation.h"
#include "training/conv/conv.h"
#include "training/conv_bn/conv_bn.h"
#include "training/embedding/embedding.h"
#include "training/gemm/gemm.h"
#include "training/loss/loss.h"
#include "training/norm/norm.h"
#include "training/optim/optim.h"
#include "training/pool/pool.h"

#endif
