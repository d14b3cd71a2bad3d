#include "base/scratch.h"

#include <stdlib.h>

static __thread float* tls_scratch = NULL;
static __thread size_t tls_scratch_cap = 0;

float* dcx_scratch(size_t nfloats) {
  if (nfloats < 16) nfloats = 16;
  if (nfloats <= tls_scratch_cap) return tls_scratch;
  void* mem = NULL;
  if (posix_memalign(&mem, 64, nfloats * sizeof(float)) != 0) return NULL;
  free(tls_scratch);
  tls_scratch = (float*)mem;
  tls_scratch_cap = nfloats;
  return tls_scratch;
}

void dcx_release_scratch(void) {
  free(tls_scratch);
  tls_scratch = NULL;
  tls_scratch_cap = 0;
}
