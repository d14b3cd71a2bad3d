/* The portable vectorized path (vector extensions), built with the target's baseline flags. */
#define SPL_IMPL_VTABLE spl_impl_portable
#include "spl_kernel_impl.h"
