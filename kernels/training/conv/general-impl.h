/* Any convolution (one build per ISA; conv-impl.h dispatches here what no other kind takes), as an implicit
 * GEMM over shifted views. The zero-padded input of a chunk of images is split into its stride phases:
 * plane (c, a, b) holds padded rows a, a + sh, ... and columns b, b + sw, ... of channel c, pr x pc per
 * image. On the grid q = (image, r, s) of pr x pc points per image, tap (i, j) of channel c is then one
 * contiguous run of that phase plane, shifted by (i*dh/sh, j*dw/sw): the GEMM reads B row k = (c, i, j) in
 * place through a table of row pointers, and no column matrix is built. Outputs at grid points r >= oh or s
 * >= ow are computed and dropped (pr*pc is a little more than oh*ow). The backward runs on the same grid:
 * the output gradient is spread on it with zeros at the dropped points, the weight gradient is a dot-
 * product GEMM of its rows with the shifted views, and the input gradient is W^T g on the grid, added back
 * into phase planes along the same views and interleaved into the input. */

struct conv_dims {
  int64_t oh, ow, p, hw, cpg, opg, kg; /* output plane, channels per group in and out, K per group */
  int64_t pr, pc, grid, nph;           /* phase plane rows and columns, grid points per image, phases */
  int64_t chunk, len, planes, slack;   /* images per chunk, grid points per chunk, phase planes */
};

static struct conv_dims conv_dims(const struct training_conv2d* s) {
  struct conv_dims d;
  d.oh = training_conv2d_out_h(s);
  d.ow = training_conv2d_out_w(s);
  d.p = d.oh * d.ow;
  d.hw = s->h * s->w;
  d.cpg = s->c_in / s->groups;
  d.opg = s->c_out / s->groups;
  d.kg = d.cpg * s->kh * s->kw;
  d.pr = d.oh + (s->kh - 1) * s->dil_h / s->stride_h;
  d.pc = d.ow + (s->kw - 1) * s->dil_w / s->stride_w;
  d.grid = d.pr * d.pc;
  d.nph = s->stride_h * s->stride_w;
  d.chunk = max64(1, min64(s->n, (128 * 1024) / (max64(d.kg, s->c_in * d.nph) * d.grid)));
  d.len = d.chunk * d.grid;
  d.planes = s->c_in * d.nph;
  d.slack = (d.pr - d.oh) * d.pc + (d.pc - d.ow) + NR; /* the largest shift, plus a ragged panel */
  return d;
}

static size_t phase_floats(const struct conv_dims* d) { return (size_t)(d->planes * d->len + d->slack); }

/* Where input column iw lands: phase column b = (iw + pw) % sw at q = (iw + pw) / sw. Per phase
 * column b, the first input column iw0[b] and its q0[b] (then iw += sw, q += 1): no division in
 * the loops. */
static void phase_columns(const struct training_conv2d* s, int64_t* iw0, int64_t* q0) {
  for (int64_t b = 0; b < s->stride_w; b++) {
    iw0[b] = ((b - s->pad_w) % s->stride_w + s->stride_w) % s->stride_w;
    q0[b] = (iw0[b] + s->pad_w) / s->stride_w;
  }
}

/* Where input row ih of channel c of image img lands in phase planes of plane_len floats: the row
 * of its phase (ih + ph) % sh, at r = (ih + ph) / sh, in the planes of phase column 0 (phase column
 * b is b planes further), or NULL when no tap reaches that row. */
static float* phase_row(const struct training_conv2d* s, const struct conv_dims* d, float* ph, int64_t plane_len,
                        int64_t img, int64_t c, int64_t ih) {
  const int64_t pr = ih + s->pad_h, r = pr / s->stride_h;
  if (r >= d->pr) return NULL;
  const int64_t plane = (c * s->stride_h + pr % s->stride_h) * s->stride_w;
  return ph + plane * plane_len + img * d->grid + r * d->pc;
}

/* The phase planes of a chunk (all c_in channels): ph[(c*sh + a)*sw + b][img][r][s] = padded
 * x[img][c][r*sh + a][s*sw + b], zero outside the input; the slack after the last plane is zeroed.
 * Zero everything, then deal each input row out to its phase rows. */
static void split_phases(const struct training_conv2d* s, const struct conv_dims* d, const float* x, int64_t nb, float* ph) {
  const int64_t plane_len = nb * d->grid, sw = s->stride_w;
  int64_t iw0[sw], q0[sw];
  phase_columns(s, iw0, q0);
  memset(ph, 0, sizeof(float) * (size_t)(d->planes * plane_len + d->slack));
  for (int64_t img = 0; img < nb; img++)
    for (int64_t c = 0; c < s->c_in; c++)
      for (int64_t ih = 0; ih < s->h; ih++) {
        float* base = phase_row(s, d, ph, plane_len, img, c, ih);
        if (!base) continue;
        const float* src = x + (img * s->c_in + c) * d->hw + ih * s->w;
        if (sw == 1) {
          memcpy(base + s->pad_w, src, sizeof(float) * (size_t)min64(s->w, d->pc - s->pad_w));
        } else if (sw == 2) { /* iw = 2t + r lands in phase column (r + pw) % 2 at q = t + (r + pw) / 2 */
          float* even = base + (s->pad_w % 2) * plane_len + s->pad_w / 2;
          float* odd = base + ((1 + s->pad_w) % 2) * plane_len + (1 + s->pad_w) / 2;
          const int64_t n_even = min64((s->w + 1) / 2, d->pc - s->pad_w / 2);
          const int64_t n_odd = min64(s->w / 2, d->pc - (1 + s->pad_w) / 2);
          int64_t t = 0;
          for (; t + 8 <= n_odd && t + 8 <= n_even; t += 8) { /* 16 inputs: 8 even, 8 odd */
            const v8f lo = ld8(src + 2 * t), hi = ld8(src + 2 * t + 8);
            st8(even + t, __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14));
            st8(odd + t, __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15));
          }
          for (int64_t u = t; u < n_even; u++) even[u] = src[2 * u];
          for (int64_t u = t; u < n_odd; u++) odd[u] = src[2 * u + 1];
        } else {
          for (int64_t b = 0; b < sw; b++) { /* phase column b: iw = iw0, iw0 + sw, ... */
            float* dst = base + b * plane_len;
            for (int64_t iw = iw0[b], q = q0[b]; iw < s->w && q < d->pc; iw += sw, q++) dst[q] = src[iw];
          }
        }
      }
}

/* gx[img][c] = the gradient phase planes at the padded-input positions inside the input (0 where
 * no tap reaches): split_phases backwards. */
static void merge_phases(const struct training_conv2d* s, const struct conv_dims* d, float* gph, int64_t nb, float* gx) {
  const int64_t plane_len = nb * d->grid, sw = s->stride_w;
  int64_t iw0[sw], q0[sw];
  phase_columns(s, iw0, q0);
  for (int64_t img = 0; img < nb; img++)
    for (int64_t c = 0; c < s->c_in; c++)
      for (int64_t ih = 0; ih < s->h; ih++) {
        float* dst = gx + (img * s->c_in + c) * d->hw + ih * s->w;
        const float* base = phase_row(s, d, gph, plane_len, img, c, ih);
        if (!base) {
          memset(dst, 0, sizeof(float) * (size_t)s->w);
          continue;
        }
        for (int64_t b = 0; b < sw; b++) {
          const float* src = base + b * plane_len;
          for (int64_t iw = iw0[b], q = q0[b]; iw < s->w; iw += sw, q++) dst[iw] = q < d->pc ? src[q] : 0.0f;
        }
      }
}

/* rows[(c*kh + i)*kw + j] = the shifted view of tap (i, j) of channel c in the planes at ph. */
static void tap_rows(const struct training_conv2d* s, const struct conv_dims* d, int64_t nb, float* ph, float** rows) {
  for (int64_t c = 0; c < s->c_in; c++)
    for (int64_t i = 0; i < s->kh; i++)
      for (int64_t j = 0; j < s->kw; j++) {
        const int64_t dy = i * s->dil_h, dx = j * s->dil_w;
        const int64_t plane = (c * s->stride_h + dy % s->stride_h) * s->stride_w + dx % s->stride_w;
        rows[(c * s->kh + i) * s->kw + j] = ph + plane * nb * d->grid + (dy / s->stride_h) * d->pc + dx / s->stride_w;
      }
}
