/* im2col / col2im for conv2d (NCHW, groups = 1), the direct convolution (an implicit GEMM,
 * at the end) and nearest / bilinear resize.
 * CPU twins: CPUBackend.im2col/col2im/conv2d/resize/resizeBackward. */

/* col[(c*kh + ky)*kw + kx, n*oh*ow + oy*ow + ox] = x[n, c, oy*sh - ph + ky, ox*sw - pw + kx] or 0
 * (the batch folded into the columns: a convolution is then one GEMM). */
kernel void im2col(global const float* x, int xoff, global float* col, int coff,
                   int batch, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                   int oh, int ow) {
    /* One work item per (col row, image, output row): the ow outputs of that row in a loop. */
    int i = get_global_id(0);
    int rows = C * kh * kw;
    if (i >= rows * batch * oh) return;
    int oy = i % oh, n = (i / oh) % batch, row = i / (oh * batch);
    int c = row / (kh * kw), ky = (row / kw) % kh, kx = row % kw;
    int iy = oy * sh - ph + ky;
    global float* dst = col + coff + row * (batch * oh * ow) + n * oh * ow + oy * ow;
    if (iy < 0 || iy >= H) {
        for (int ox = 0; ox < ow; ++ox) dst[ox] = 0.0f;
        return;
    }
    global const float* src = x + xoff + ((n * C + c) * H + iy) * W;
    for (int ox = 0; ox < ow; ++ox) {
        int ix = ox * sw - pw + kx;
        dst[ox] = (ix >= 0 && ix < W) ? src[ix] : 0.0f;
    }
}

/* Gather form of col2im (no atomics): one work item per input row (image, channel, iy), each
 * pixel summing the col entries that read it. */
kernel void col2im(global const float* col, int coff, global float* dx, int dxoff,
                   int batch, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                   int oh, int ow) {
    int i = get_global_id(0);
    if (i >= batch * C * H) return;
    int iy = i % H, c = (i / H) % C, n = i / (H * C);
    int hw = oh * ow, cols = batch * hw;
    global const float* cb = col + coff + n * hw;
    global float* drow = dx + dxoff + ((n * C + c) * H + iy) * W;
    for (int ix = 0; ix < W; ++ix) {
        float s = 0.0f;
        for (int ky = 0; ky < kh; ++ky) {
            int ty = iy + ph - ky;
            if (ty < 0 || ty % sh != 0) continue;
            int oy = ty / sh;
            if (oy >= oh) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int tx = ix + pw - kx;
                if (tx < 0 || tx % sw != 0) continue;
                int ox = tx / sw;
                if (ox >= ow) continue;
                s += cb[((c * kh + ky) * kw + kx) * cols + oy * ow + ox];
            }
        }
        drow[ix] = s;
    }
}

/* Source taps of output coordinate o (mode 0 nearest, 1 bilinear half-pixel). */
inline void resize_taps(int mode, int o, int in, int out, int* i0, int* i1, float* w0, float* w1) {
    float scale = (float)in / (float)out;
    if (mode == 0) {
        *i0 = min((int)floor((float)o * scale), in - 1);
        *i1 = *i0; *w0 = 1.0f; *w1 = 0.0f;
    } else {
        float src = fmax(((float)o + 0.5f) * scale - 0.5f, 0.0f);
        *i0 = min((int)floor(src), in - 1);
        *i1 = min(*i0 + 1, in - 1);
        *w1 = src - (float)(*i0);
        *w0 = 1.0f - *w1;
    }
}

kernel void resize2d(global const float* x, int xoff, global float* y, int yoff, int planes,
                     int ih, int iw, int oh, int ow, int mode) {
    int i = get_global_id(0);
    if (i >= planes * oh * ow) return;
    int ox = i % ow, oy = (i / ow) % oh, p = i / (ow * oh);
    int y0, y1, x0, x1; float wy0, wy1, wx0, wx1;
    resize_taps(mode, oy, ih, oh, &y0, &y1, &wy0, &wy1);
    resize_taps(mode, ox, iw, ow, &x0, &x1, &wx0, &wx1);
    global const float* xp = x + xoff + p * ih * iw;
    float top = xp[y0 * iw + x0] * wx0 + xp[y0 * iw + x1] * wx1;
    float bot = xp[y1 * iw + x0] * wx0 + xp[y1 * iw + x1] * wx1;
    y[yoff + i] = top * wy0 + bot * wy1;
}

/* Weight with which output coordinate o reads input coordinate i (0 if it does not). */
inline float resize_weight(int mode, int o, int i, int in, int out) {
    int i0, i1; float w0, w1;
    resize_taps(mode, o, in, out, &i0, &i1, &w0, &w1);
    return (i0 == i ? w0 : 0.0f) + (i1 == i ? w1 : 0.0f);
}

/* Gather form of the resize adjoint: each input pixel visits the outputs that can read it
 * (a window found from the inverse mapping, with a margin). */
kernel void resize2d_backward(global const float* dy, int dyoff, global float* dx, int dxoff,
                              int planes, int ih, int iw, int oh, int ow, int mode) {
    int i = get_global_id(0);
    if (i >= planes * ih * iw) return;
    int ix = i % iw, iy = (i / iw) % ih, p = i / (iw * ih);
    float sy = (float)oh / (float)ih, sx = (float)ow / (float)iw;
    int oy0 = max((int)floor(((float)iy - 1.0f) * sy) - 2, 0);
    int oy1 = min((int)ceil(((float)iy + 2.0f) * sy) + 2, oh);
    int ox0 = max((int)floor(((float)ix - 1.0f) * sx) - 2, 0);
    int ox1 = min((int)ceil(((float)ix + 2.0f) * sx) + 2, ow);
    global const float* gp = dy + dyoff + p * oh * ow;
    float s = 0.0f;
    for (int oy = oy0; oy < oy1; ++oy) {
        float wy = resize_weight(mode, oy, iy, ih, oh);
        if (wy == 0.0f) continue;
        for (int ox = ox0; ox < ox1; ++ox) {
            float wx = resize_weight(mode, ox, ix, iw, ow);
            if (wx != 0.0f) s += gp[oy * ow + ox] * wy * wx;
        }
    }
    dx[dxoff + i] = s;
}

/* Direct convolution as an implicit GEMM (no im2col matrix in memory), bias and activation
 * (act >= 0, epilogue_act) fused, NCHW, groups = 1. CPU twin: CPUBackend.conv2d (im2col + GEMM through cblas_sgemm).
 *
 *   y[n, co, oy, ox] = bias[co] + sum over k = (c, ky, kx) of w[co, k] * x[n, c, iy, ix],
 *   iy = oy*sh - ph + ky, ix = ox*sw - pw + kx (0 outside the image),
 *
 * i.e. Y [Cout, P] = W [Cout, K] X [K, P] over the P = batch*oh*ow output pixels with
 * K = C*kh*kw, where X is never stored: each work group computes a CONV_TSM x CONV_TSN tile of
 * (output channels, output pixels), stepping through K in slices of CONV_TSK. Per step it loads
 * the weight slice and the input slice (the addresses computed on the fly, with the padding's
 * bounds checks) into local memory, then each item accumulates CONV_WPTM x CONV_WPTN outputs in
 * registers, summing over k in order. Small local tables spare the per-element divisions: the
 * tile's pixels (image base, top-left input corner, output offset), computed once, and each K
 * slice's taps (channel plane + kernel offset, ky, kx), computed one step ahead
 * (double-buffered, so no extra barrier). Local size (CONV_TSN / CONV_WPTN, CONV_TSM /
 * CONV_WPTM): dimension 0 runs along the pixels.
 *
 * Two forms of the same sums, chosen by the tile shape:
 * - items along the pixels (CONV_TSN / CONV_WPTN > 1; the GPU set): the loads are spread so
 *   that adjacent items read adjacent weights (along k) and adjacent pixels, item (tn, tm)
 *   owns pixels tn + j*RTSN and channels tm + i*RTSM;
 * - one item per row of pixels (CONV_TSN == CONV_WPTN, a multiple of 16; the CPU set, e.g.
 *   PoCL): the item's pixels are contiguous, accumulated in float16 vectors like gemm_packed's
 *   register block, and each item loads whole rows of the slices (loops a CPU compiler turns
 *   into vector copies and gathers), the weight slice kept in w's own layout; with stride 1
 *   and a tile of one output row or of whole rows, each tap reads runs of x (masked at the
 *   left and right padding) instead of pixel by pixel. */
#ifndef CONV_TSM
#define CONV_TSM 64
#endif
#ifndef CONV_TSN
#define CONV_TSN 64
#endif
#ifndef CONV_TSK
#define CONV_TSK 16
#endif
#ifndef CONV_WPTM
#define CONV_WPTM 4
#endif
#ifndef CONV_WPTN
#define CONV_WPTN 4
#endif
#define CONV_RTSM (CONV_TSM / CONV_WPTM)
#define CONV_RTSN (CONV_TSN / CONV_WPTN)
#define CONV_THREADS (CONV_RTSM * CONV_RTSN)
#if CONV_RTSN == 1 && CONV_WPTN % 16 == 0
#define CONV_VEC (CONV_WPTN / 16)
#endif
/* A pixel past the batch, or a k past K: a row far above any image, so the load reads 0. */
#define CONV_NO_ROW (-(1 << 29))

/* The taps of K slice k0 (items tid, tid + CONV_THREADS, ...). */
inline void conv_taps(local int* toff, local int* ty, local int* tx, int k0, int K, int khw, int kw,
                      int plane, int W, int tid) {
    for (int kk = tid; kk < CONV_TSK; kk += CONV_THREADS) {
        int gk = k0 + kk;
        int c = gk / khw, r = gk - c * khw, ky = r / kw, kx = r - ky * kw;
        toff[kk] = gk < K ? c * plane + ky * W + kx : 0;
        ty[kk] = gk < K ? ky : CONV_NO_ROW;
        tx[kk] = kx;
    }
}

kernel void conv2d_direct(global const float* x, int xoff, global const float* w, int woff,
                          global const float* bias, int boff, int hasBias, global float* y, int yoff,
                          int batch, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                          int oh, int ow, int Cout, int act) {
#ifdef CONV_VEC
    local float Ws[CONV_TSM][CONV_TSK];     /* as in w: rows copied as runs */
#else
    local float Ws[CONV_TSK][CONV_TSM + 1]; /* +1: the k-major stores fall in different banks */
#endif
    local float Xs[CONV_TSK][CONV_TSN];
    local int pbase[CONV_TSN], py[CONV_TSN], px[CONV_TSN], ybase[CONV_TSN];
    local int toff[2][CONV_TSK], ty[2][CONV_TSK], tx[2][CONV_TSK];
    int tn = get_local_id(0), tm = get_local_id(1);
    int n0 = get_group_id(0) * CONV_TSN, m0 = get_group_id(1) * CONV_TSM;
    int tid = tm * CONV_RTSN + tn;
    int khw = kh * kw, K = C * khw, hw = oh * ow, P = batch * hw, plane = H * W;

    /* The tile's pixels: input element (c, iy0 + ky, ix0 + kx) of pixel nn is
     * x[pbase[nn] + c*plane + ky*W + kx] when inside the image; its output channel m is
     * y[yoff + ybase[nn] + m*hw]. */
    for (int nn = tid; nn < CONV_TSN; nn += CONV_THREADS) {
        int p = n0 + nn;
        int img = p / hw, r = p - img * hw, oy = r / ow, ox = r - oy * ow;
        int iy0 = oy * sh - ph, ix0 = ox * sw - pw;
        pbase[nn] = p < P ? xoff + img * C * plane + iy0 * W + ix0 : 0;
        py[nn] = p < P ? iy0 : CONV_NO_ROW;
        px[nn] = ix0;
        ybase[nn] = p < P ? img * Cout * hw + r : -1;
    }
    conv_taps(toff[0], ty[0], tx[0], 0, K, khw, kw, plane, W, tid);
    barrier(CLK_LOCAL_MEM_FENCE);

#ifdef CONV_VEC
    /* With stride 1, a tile within one output row, or of whole rows, reads runs of x: seg
     * pixels of one input row per tap (0: gather pixel by pixel). */
    int seg = 0;
    if (sw == 1 && n0 + CONV_TSN <= P) {
        if (n0 / ow == (n0 + CONV_TSN - 1) / ow) seg = CONV_TSN;
        else if (CONV_TSN % ow == 0 && n0 % ow == 0) seg = ow;
    }
    float16 acc[CONV_WPTM][CONV_VEC];
    for (int i = 0; i < CONV_WPTM; ++i)
        for (int q = 0; q < CONV_VEC; ++q) acc[i][q] = (float16)(0.0f);
#else
    float acc[CONV_WPTM][CONV_WPTN];
    for (int i = 0; i < CONV_WPTM; ++i)
        for (int j = 0; j < CONV_WPTN; ++j) acc[i][j] = 0.0f;
#endif
    int slot = 0;
    for (int k0 = 0; k0 < K; k0 += CONV_TSK) {
#ifdef CONV_VEC
        for (int mm = tid; mm < CONV_TSM; mm += CONV_THREADS) {
            int gm = m0 + mm;
            for (int kk = 0; kk < CONV_TSK; ++kk) {
                int gk = k0 + kk;
                Ws[mm][kk] = (gm < Cout && gk < K) ? w[woff + gm * K + gk] : 0.0f;
            }
        }
        for (int kk = tid; kk < CONV_TSK; kk += CONV_THREADS) {
            int o = toff[slot][kk], dy = ty[slot][kk], dx = tx[slot][kk];
            if (seg == 0) {
                for (int nn = 0; nn < CONV_TSN; ++nn) {
                    int iy = py[nn] + dy, ix = px[nn] + dx;
                    Xs[kk][nn] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[pbase[nn] + o] : 0.0f;
                }
                continue;
            }
            for (int s0 = 0; s0 < CONV_TSN; s0 += seg) {
                int iy = py[s0] + dy, ix0 = px[s0] + dx;
                global const float* src = x + pbase[s0] + o;
                local float* dst = &Xs[kk][s0];
                if (iy >= 0 && iy < H) {
                    for (int j = 0; j < seg; ++j) dst[j] = (ix0 + j >= 0 && ix0 + j < W) ? src[j] : 0.0f;
                } else {
                    for (int j = 0; j < seg; ++j) dst[j] = 0.0f;
                }
            }
        }
#else
        for (int e = tid; e < CONV_TSK * CONV_TSM; e += CONV_THREADS) {
            int mm = e / CONV_TSK, kk = e - mm * CONV_TSK;
            int gm = m0 + mm, gk = k0 + kk;
            Ws[kk][mm] = (gm < Cout && gk < K) ? w[woff + gm * K + gk] : 0.0f;
        }
        for (int e = tid; e < CONV_TSK * CONV_TSN; e += CONV_THREADS) {
            int kk = e / CONV_TSN, nn = e - kk * CONV_TSN;
            int iy = py[nn] + ty[slot][kk], ix = px[nn] + tx[slot][kk];
            Xs[kk][nn] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[pbase[nn] + toff[slot][kk]] : 0.0f;
        }
#endif
        /* the next slice's taps into the other slot (last read before the previous step's
         * first barrier) */
        if (k0 + CONV_TSK < K)
            conv_taps(toff[1 - slot], ty[1 - slot], tx[1 - slot], k0 + CONV_TSK, K, khw, kw, plane, W, tid);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < CONV_TSK; ++kk) {
#ifdef CONV_VEC
            float16 b[CONV_VEC];
            for (int q = 0; q < CONV_VEC; ++q) b[q] = vload16(q, &Xs[kk][0]);
            for (int i = 0; i < CONV_WPTM; ++i) {
                float16 a = (float16)(Ws[tm + i * CONV_RTSM][kk]);
                for (int q = 0; q < CONV_VEC; ++q) acc[i][q] = fma(a, b[q], acc[i][q]);
            }
#else
            float breg[CONV_WPTN];
            for (int j = 0; j < CONV_WPTN; ++j) breg[j] = Xs[kk][tn + j * CONV_RTSN];
            for (int i = 0; i < CONV_WPTM; ++i) {
                float a = Ws[kk][tm + i * CONV_RTSM];
                for (int j = 0; j < CONV_WPTN; ++j) acc[i][j] = fma(a, breg[j], acc[i][j]);
            }
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        slot = 1 - slot;
    }

    for (int i = 0; i < CONV_WPTM; ++i) {
        int m = m0 + tm + i * CONV_RTSM;
        if (m >= Cout) continue;
        float b = hasBias ? bias[boff + m] : 0.0f;
        global float* ym = y + yoff + m * hw;
#ifdef CONV_VEC
        float vals[CONV_WPTN];
        for (int q = 0; q < CONV_VEC; ++q) vstore16(acc[i][q], q, vals);
        for (int j = 0; j < CONV_WPTN; ++j) {
            int o = ybase[j];
            if (o >= 0) ym[o] = epilogue_act(act, vals[j] + b);
        }
#else
        for (int j = 0; j < CONV_WPTN; ++j) {
            int o = ybase[tn + j * CONV_RTSN];
            if (o >= 0) ym[o] = epilogue_act(act, acc[i][j] + b);
        }
#endif
    }
}
