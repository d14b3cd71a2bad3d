/* 1 x 1 convolutions as plain GEMMs per image (one build per ISA; see conv-impl.h). */

/* A batch in NCHW seen as [c][n * hw]: channel c of pixel q of image b is p[b * img + c * hw + q],
 * column b * hw + q. */
struct images {
  const float* p;
  int64_t hw, img;
};

/* The view summed over: element (i, k) of A, or (k, j) of B, is channel i or j at column k. */
static void pack_images(const struct images* s, int64_t k0, int64_t kc, int64_t i0, int64_t ni, int width,
                        float* dst) {
  for (int64_t kk = 0, q = k0 % s->hw, img = k0 / s->hw; kk < kc; q = 0, img++) { /* image by image */
    const int64_t len = min64(s->hw - q, kc - kk);
    const float* rows[NR];
    for (int l = 0; l < width; l++) rows[l] = l < ni ? s->p + img * s->img + (i0 + l) * s->hw + q : NULL;
    pack_rows(rows, len, width, dst + kk * width);
    kk += len;
  }
}

static void pack_a_images(const void* ctx, int64_t k0, int64_t kc, int64_t i0, int64_t ni, float* dst) {
  pack_images((const struct images*)ctx, k0, kc, i0, ni, MR, dst);
}

static void pack_b_images(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nj, float* dst) {
  pack_images((const struct images*)ctx, k0, kc, j0, nj, NR, dst);
}

/* The view as it is, as B: element (k, j) is channel k at column j (the pixels of every image). */
static void pack_b_pixels(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nj, float* dst) {
  const struct images* s = (const struct images*)ctx;
  for (int64_t l = 0; l < nj;) { /* the panel's columns image by image */
    const int64_t q = (j0 + l) % s->hw, len = min64(s->hw - q, nj - l);
    const float* src = s->p + (j0 + l) / s->hw * s->img + k0 * s->hw + q;
    for (int64_t kk = 0; kk < kc; kk++) memcpy(dst + kk * NR + l, src + kk * s->hw, sizeof(float) * (size_t)len);
    l += len;
  }
  for (int64_t kk = 0; kk < kc; kk++)
    for (int64_t l = nj; l < NR; l++) dst[kk * NR + l] = 0.0f;
}

static struct operand pixels_b(struct images* s) { return (struct operand){pack_b_pixels, s, NULL, 0, NULL}; }

/* y [n][c][hw] = the output stage o of t [c][n * hw] (raw too, when given): a GEMM over every
 * image's pixels back to NCHW */
static void pixels_to_images(const float* t, int64_t n, int64_t c, int64_t hw, const struct gemm_out* o, float* raw,
                             float* y) {
  for (int64_t b = 0; b < n; b++)
    for (int64_t ch = 0; ch < c; ch++) {
      const int64_t at = (b * c + ch) * hw;
      out_row(t + (ch * n + b) * hw, hw, ch, o, raw ? raw + at : NULL, y + at);
    }
}

/* Planes smaller than this run as one GEMM over the pixels of every image: per image, a plane
 * of 7 x 7 is three column panels and a ragged one of a single column (measured: the 7 x 7 layers
 * of the mobile-scale program faster as one GEMM; 14 x 14 planes no faster). */
#define BATCHED_PW_MAX_HW 64

/* y_b [c_out, hw] = W [c_out, c_in] x_b [c_in, hw]: x rows read in place, the output stage in the
 * tiles; for small planes, one GEMM over every image into scratch, the output stage row by row. */
static int pointwise_forward(const struct training_conv2d* s, const float* x, const float* w, const struct gemm_out* o,
                             float* raw, float* y) {
  const int64_t hw = s->h * s->w, co = s->c_out;
  const int batched = s->n > 1 && hw < BATCHED_PW_MAX_HW;
  const int64_t cols = batched ? s->n * hw : hw;
  const size_t pa = packed_a_size(co, s->c_in), ws_n = gemm_workspace(co, cols);
  float* ws = dcx_scratch(pa + ws_n + (batched ? (size_t)(co * cols) : 0));
  if (!ws) return DCX_ENOMEM;
  struct strided sw = {w, s->c_in, 1};
  pack_a_all(co, s->c_in, strided_a(&sw), ws);
  if (batched) {
    struct images bx = {x, hw, s->c_in * hw};
    float* t = ws + pa + ws_n;
    gemm_run(co, cols, s->c_in, (struct operand){0}, ws, pixels_b(&bx), t, cols, 0, &plain_out, ws + pa);
    pixels_to_images(t, s->n, co, hw, o, raw, y);
    return DCX_OK;
  }
  struct gemm_out ob = *o;
  ob.out_delta = raw ? (intptr_t)((char*)y - (char*)raw) : 0; /* the two outputs have the same layout */
  for (int64_t b = 0; b < s->n; b++) {
    struct strided sx = {x + b * s->c_in * hw, hw, 1};
    float* c = (raw ? raw : y) + b * co * hw;
    gemm_run(co, hw, s->c_in, (struct operand){0}, ws, strided_b(&sx), c, hw, 0, &ob, ws + pa);
  }
  return DCX_OK;
}

#define DOT_K_BLOCK 2048 /* weight gradient: hw in blocks whose rows of g and x stay in L2 */
#define BATCHED_GW_MAX_HW 256 /* below this plane size the weight gradient is one GEMM over every image */

/* g [n][c_out][hw] fetched once (gb += its row sums); gw = sum over images of g_b x_b^T: dot products
 * over hw per image for large planes, one packed GEMM with k = n * hw over every image for small ones
 * (where a dot product per image is too short); gx_b = W^T g_b (W^T packed once, g rows read in place),
 * or for the smallest planes gx = W^T g as one GEMM over every image's pixels, then copied out. */
static int pointwise_backward(const struct training_conv2d* s, const struct grad_src* src, const float* x, const float* w,
                              float* gx, float* gw, float* gb) {
  const int64_t hw = s->h * s->w, ci = s->c_in, co = s->c_out, cols = s->n * hw;
  const int plain = !src->y && !src->scale && !src->sum_g, batched = gw && hw < BATCHED_GW_MAX_HW;
  const int batched_gx = gx && s->n > 1 && hw < BATCHED_PW_MAX_HW;
  const int64_t images_held = batched || batched_gx ? s->n : 1; /* g of every image, or of one at a time */
  const size_t pa = gx ? packed_a_size(ci, co) : 0;
  const size_t ws_n = (size_t)max64(gx ? (int64_t)gemm_workspace(ci, batched_gx ? cols : hw) : 0,
                                    batched ? (int64_t)gemm_workspace(co, ci) : 0);
  float* ws = dcx_scratch(pa + ws_n + (plain ? 0 : (size_t)(images_held * co * hw)) + (batched_gx ? (size_t)(ci * cols) : 0));
  if (!ws) return DCX_ENOMEM;
  float* held = ws + pa + ws_n;
  if (gx) {
    struct strided swt = {w, 1, ci};
    pack_a_all(ci, co, strided_a(&swt), ws);
  }
  if (gb) memset(gb, 0, sizeof(float) * (size_t)co);
  for (int64_t b = 0; b < s->n; b++) {
    float* g = plain ? (float*)src->gy + b * co * hw : held + (images_held > 1 ? b * co * hw : 0);
    if (!plain)
      for (int64_t o = 0; o < co; o++) grad_row(src, (b * co + o) * hw, hw, o, g + o * hw);
    if (gb)
      for (int64_t o = 0; o < co; o++) gb[o] += sum_row(g + o * hw, hw);
    if (gw && !batched)
      for (int64_t k0 = 0; k0 < hw; k0 += DOT_K_BLOCK)
        gemm_dot(co, ci, min64(DOT_K_BLOCK, hw - k0), g + k0, hw, x + b * ci * hw + k0, hw, NULL, gw, ci,
                 b > 0 || k0 > 0, NULL, NULL, 0);
    if (gx && !batched_gx) {
      struct strided sg = {g, hw, 1};
      gemm_run(ci, hw, co, (struct operand){0}, ws, strided_b(&sg), gx + b * ci * hw, hw, 0, &plain_out, ws + pa);
    }
  }
  struct images all_g = {plain ? src->gy : held, hw, co * hw};
  if (batched) {
    struct images bx = {x, hw, ci * hw};
    gemm_run(co, ci, cols, (struct operand){pack_a_images, &all_g, NULL, 0, NULL}, NULL,
             (struct operand){pack_b_images, &bx, NULL, 0, NULL}, gw, ci, 0, &plain_out, ws + pa);
  }
  if (batched_gx) {
    float* t = held + (plain ? 0 : images_held * co * hw); /* [ci][n * hw] */
    gemm_run(ci, cols, co, (struct operand){0}, ws, pixels_b(&all_g), t, cols, 0, &plain_out, ws + pa);
    pixels_to_images(t, s->n, ci, hw, &plain_out, NULL, gx);
  }
  return DCX_OK;
}
