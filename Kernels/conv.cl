/* im2col / col2im for conv2d (NCHW, groups = 1) and nearest / bilinear resize.
 * CPU twins: CPUBackend.im2col/col2im/resize/resizeBackward. */

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
