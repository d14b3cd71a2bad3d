/* The training kernels, one build per ISA (base/isa_build.c includes this file once per ISA): every
 * family's -impl.h, in the order they use each other, in one translation unit. Arguments were checked
 * by the families' entry points (<family>.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/scratch.h"
#include "base/vec.h"
#include "training/training.h"

#if defined(DCX_USE_NEON)
#include <arm_neon.h>
#endif

#include "training/rows-impl.h"
#include "training/gemm/gemm-impl.h"
#include "training/activation/activation-impl.h"
#include "training/optim/optim-impl.h"
#include "training/loss/loss-impl.h"
#include "training/norm/norm-impl.h"
#include "training/embedding/embedding-impl.h"
#include "training/conv/conv-impl.h"
#include "training/conv_bn/conv_bn-impl.h"
#include "training/pool/pool-impl.h"
