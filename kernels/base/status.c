#include "base/status.h"

const char* dcx_strerror(int code) {
  switch (code) {
    case DCX_OK: return "ok";
    case DCX_EINVAL_SHAPE: return "sizes must be positive and fit together";
    case DCX_EINVAL_PTR: return "a required data pointer is NULL";
    case DCX_ENOMEM: return "out of memory for the kernel's scratch buffer";
    case DCX_EINDEX: return "an index (class target, embedding row or pooling index) is out of range";
    case DCX_EINVAL_ISA: return "that kernel implementation is not available on this build or CPU";
    default: return "unknown error";
  }
}
