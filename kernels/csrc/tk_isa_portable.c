/* The portable vectorized training kernels (vector extensions), built with the target's baseline flags. */
#define TK_IMPL_VTABLE tk_impl_portable
#include "tk_kernel_impl.h"
