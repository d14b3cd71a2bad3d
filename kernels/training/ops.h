// Every op of the training kernels, each written once in its family's op_<op>-impl.h; the adapters
// (op_aten.cpp, op_executorch.cpp) register them from kernels/ops.def.
#pragma once

#include "training/activation/op_activation-impl.h"
#include "training/conv/op_conv2d-impl.h"
#include "training/conv_bn/op_conv2d_bn-impl.h"
#include "training/embedding/op_embedding-impl.h"
#include "training/gemm/op_linear-impl.h"
#include "training/loss/op_loss-impl.h"
#include "training/norm/op_norm-impl.h"
#include "training/optim/op_optim-impl.h"
#include "training/pool/op_pool2d-impl.h"
