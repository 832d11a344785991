#version 450
#include "common.glsl"
/* Twin of softmax_rows (Kernels/softmax.cl): row-wise softmax / log-softmax over the last
 * axis, one work-group of ROW_WG items per row (a 1-D launch of rows * ROW_WG items).
 * Differences: the row comes from group0() and groups past `rows` (a folded launch) return
 * at once, uniformly per group; the tree reductions use a shared array sized by ROW_WG. */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float y[]; };

layout(push_constant) uniform PC {
    int xoff;
    int yoff;
    int rows;
    int cols;
    int logmode;
} pc;

shared float red[ROW_WG];

/* Tree reductions over the work-group (ROW_WG a power of two), as wg_max / wg_sum. */
float wg_max(float v) {
    int l = int(gl_LocalInvocationID.x);
    red[l] = v;
    memoryBarrierShared();
    barrier();
    for (int s = ROW_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] = max(red[l], red[l + s]);
        memoryBarrierShared();
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

float wg_sum(float v) {
    int l = int(gl_LocalInvocationID.x);
    red[l] = v;
    memoryBarrierShared();
    barrier();
    for (int s = ROW_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        memoryBarrierShared();
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main() {
    int row = group0(), l = int(gl_LocalInvocationID.x);
    if (row >= pc.rows) return; /* uniform per group */
    int cols = pc.cols;
    int xr = pc.xoff + row * cols;
    int yr = pc.yoff + row * cols;
    float m = uintBitsToFloat(0xff800000u); /* -INFINITY */
    for (int j = l; j < cols; j += ROW_WG) m = max(m, x[xr + j]);
    m = wg_max(m);
    float s = 0.0;
    for (int j = l; j < cols; j += ROW_WG) s += exp(x[xr + j] - m);
    s = wg_sum(s);
    if (pc.logmode != 0) {
        float ls = log(s);
        for (int j = l; j < cols; j += ROW_WG) y[yr + j] = x[xr + j] - m - ls;
    } else {
        float inv = 1.0 / s;
        for (int j = l; j < cols; j += ROW_WG) y[yr + j] = exp(x[xr + j] - m) * inv;
    }
}
