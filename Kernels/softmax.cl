/* Row-wise softmax / log-softmax over the last axis, one work-group of ROW_WG items per row
 * (ROW_WG = 1 on CPUs: one item loops the row). CPU twin: CPUBackend.softmax. */
#ifndef ROW_WG
#define ROW_WG 64
#endif

/* Tree reductions over the work-group (ROW_WG a power of two). */
inline float wg_max(local float* buf, float v) {
    int l = get_local_id(0);
    buf[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ROW_WG / 2; s > 0; s >>= 1) {
        if (l < s) buf[l] = fmax(buf[l], buf[l + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = buf[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

inline float wg_sum(local float* buf, float v) {
    int l = get_local_id(0);
    buf[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ROW_WG / 2; s > 0; s >>= 1) {
        if (l < s) buf[l] += buf[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = buf[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

kernel void softmax_rows(global const float* x, int xoff, global float* y, int yoff,
                         int rows, int cols, int logmode) {
    local float red[ROW_WG];
    int row = get_group_id(0), l = get_local_id(0);
    global const float* xr = x + xoff + row * cols;
    global float* yr = y + yoff + row * cols;
    float m = -INFINITY;
    for (int j = l; j < cols; j += ROW_WG) m = fmax(m, xr[j]);
    m = wg_max(red, m);
    float s = 0.0f;
    for (int j = l; j < cols; j += ROW_WG) s += exp(xr[j] - m);
    s = wg_sum(red, s);
    if (logmode) {
        float ls = log(s);
        for (int j = l; j < cols; j += ROW_WG) yr[j] = xr[j] - m - ls;
    } else {
        float inv = 1.0f / s;
        for (int j = l; j < cols; j += ROW_WG) yr[j] = exp(xr[j] - m) * inv;
    }
}

kernel void softmax_rows_backward(global const float* y, int yoff, global const float* dy, int dyoff,
                                  global float* dx, int dxoff, int rows, int cols, int logmode) {
    local float red[ROW_WG];
    int row = get_group_id(0), l = get_local_id(0);
    global const float* yr = y + yoff + row * cols;
    global const float* gr = dy + dyoff + row * cols;
    global float* dr = dx + dxoff + row * cols;
    float s = 0.0f;
    if (logmode) {
        for (int j = l; j < cols; j += ROW_WG) s += gr[j];
    } else {
        for (int j = l; j < cols; j += ROW_WG) s += gr[j] * yr[j];
    }
    s = wg_sum(red, s);
    if (logmode) {
        for (int j = l; j < cols; j += ROW_WG) dr[j] = gr[j] - exp(yr[j]) * s;
    } else {
        for (int j = l; j < cols; j += ROW_WG) dr[j] = yr[j] * (gr[j] - s);
    }
}

/* Normalisation over contiguous groups: [count, cpg, spatial] with (mean, rstd) per group,
 * affine per channel (channel = (group % groups) * cpg + c), then SiLU when silu != 0 (a
 * ResNet block's GroupNorm + SiLU in one pass). Layer norm is groups = 1, cpg = 1,
 * spatial = cols, with the affine per column applied by layer_norm_affine.
 * CPU twin: CPUBackend.groupNorm (with activation: its fused form). */
kernel void group_norm(global const float* x, int xoff, global const float* gamma, int goff,
                       global const float* beta, int boff, int has_affine,
                       global float* y, int yoff, global float* mean, int moff,
                       global float* rstd, int roff, int groups, int cpg, int spatial, float eps,
                       int silu) {
    local float red[ROW_WG];
    int grp = get_group_id(0), l = get_local_id(0);
    int len = cpg * spatial;
    global const float* xg = x + xoff + grp * len;
    global float* yg = y + yoff + grp * len;
    float s = 0.0f;
    for (int j = l; j < len; j += ROW_WG) s += xg[j];
    float mu = wg_sum(red, s) / (float)len;
    float v = 0.0f;
    for (int j = l; j < len; j += ROW_WG) { float d = xg[j] - mu; v += d * d; }
    float rs = rsqrt(wg_sum(red, v) / (float)len + eps);
    if (l == 0) { mean[moff + grp] = mu; rstd[roff + grp] = rs; }
    int c0 = (grp % groups) * cpg;
    for (int j = l; j < len; j += ROW_WG) {
        float h = (xg[j] - mu) * rs;
        if (has_affine) { int c = c0 + j / spatial; h = h * gamma[goff + c] + beta[boff + c]; }
        if (silu) h = h / (1.0f + exp(-h));
        yg[j] = h;
    }
}

/* y[r, j] = y[r, j] * gamma[j] + beta[j] (layer norm's per-column affine). */
kernel void layer_norm_affine(global float* y, int yoff, global const float* gamma, int goff,
                              int has_gamma, global const float* beta, int boff, int has_beta,
                              int rows, int cols) {
    int i = get_global_id(0);
    if (i >= rows * cols) return;
    int j = i % cols;
    float v = y[yoff + i];
    if (has_gamma) v *= gamma[goff + j];
    if (has_beta) v += beta[boff + j];
    y[yoff + i] = v;
}

/* dx of a group norm (layer norm: per_col = 1 reads gamma per column instead of channel). */
kernel void group_norm_backward_dx(global const float* x, int xoff, global const float* gamma,
                                   int goff, int has_gamma, int per_col,
                                   global const float* mean, int moff, global const float* rstd,
                                   int roff, global const float* dy, int dyoff, global float* dx,
                                   int dxoff, int groups, int cpg, int spatial) {
    local float red[ROW_WG];
    int grp = get_group_id(0), l = get_local_id(0);
    int len = cpg * spatial, c0 = (grp % groups) * cpg;
    global const float* xg = x + xoff + grp * len;
    global const float* gg = dy + dyoff + grp * len;
    global float* dg = dx + dxoff + grp * len;
    float mu = mean[moff + grp], rs = rstd[roff + grp];
    float sg = 0.0f, sgx = 0.0f;
    for (int j = l; j < len; j += ROW_WG) {
        float gm = has_gamma ? gamma[goff + (per_col ? j : c0 + j / spatial)] : 1.0f;
        float gh = gg[j] * gm;
        sg += gh;
        sgx += gh * (xg[j] - mu) * rs;
    }
    sg = wg_sum(red, sg);
    sgx = wg_sum(red, sgx);
    float n = (float)len;
    for (int j = l; j < len; j += ROW_WG) {
        float gm = has_gamma ? gamma[goff + (per_col ? j : c0 + j / spatial)] : 1.0f;
        float xh = (xg[j] - mu) * rs;
        dg[j] = rs * (gg[j] * gm - sg / n - xh * sgx / n);
    }
}

/* dgamma/dbeta per channel c: sum over n and spatial of dy * xhat and dy.
 * Layer norm: n = rows, channels = cols, spatial = 1, groups = 1 with stat per row. */
kernel void norm_backward_affine(global const float* x, int xoff, global const float* mean,
                                 int moff, global const float* rstd, int roff,
                                 global const float* dy, int dyoff, global float* dgamma, int dgoff,
                                 int want_g, global float* dbeta, int dboff, int want_b,
                                 int n, int channels, int spatial, int groups) {
    int c = get_global_id(0);
    if (c >= channels) return;
    int cpg = channels / groups;
    float sg = 0.0f, sb = 0.0f;
    for (int b = 0; b < n; ++b) {
        int st = b * groups + c / cpg;
        float mu = mean[moff + st], rs = rstd[roff + st];
        int base = (b * channels + c) * spatial;
        for (int s = 0; s < spatial; ++s) {
            float g = dy[dyoff + base + s];
            sg += g * (x[xoff + base + s] - mu) * rs;
            sb += g;
        }
    }
    if (want_g) dgamma[dgoff + c] = sg;
    if (want_b) dbeta[dboff + c] = sb;
}
