#version 450
#include "common.glsl"
/* Twin of softmax_rows_backward (Kernels/softmax.cl): dx of a row-wise softmax (logmode 0)
 * or log-softmax (logmode 1) from its output y and dy, one work-group of ROW_WG items per row
 * (a 1-D launch of rows * ROW_WG items).
 * Differences: the row comes from group0() and groups past `rows` (a folded launch) return
 * at once, uniformly per group; the tree reduction uses a shared array sized by ROW_WG. */

layout(std430, set = 0, binding = 0) buffer B0 { float y[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float dy[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float dx[]; };

layout(push_constant) uniform PC {
    int yoff;
    int dyoff;
    int dxoff;
    int rows;
    int cols;
    int logmode;
} pc;

shared float red[ROW_WG];

/* Tree sum over the work-group (ROW_WG a power of two), as wg_sum. */
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
    int yr = pc.yoff + row * cols;
    int gr = pc.dyoff + row * cols;
    int dr = pc.dxoff + row * cols;
    float s = 0.0;
    if (pc.logmode != 0) {
        for (int j = l; j < cols; j += ROW_WG) s += dy[gr + j];
    } else {
        for (int j = l; j < cols; j += ROW_WG) s += dy[gr + j] * y[yr + j];
    }
    s = wg_sum(s);
    if (pc.logmode != 0) {
        for (int j = l; j < cols; j += ROW_WG) dx[dr + j] = dy[gr + j] - exp(y[yr + j]) * s;
    } else {
        for (int j = l; j < cols; j += ROW_WG) dx[dr + j] = y[yr + j] * (dy[gr + j] - s);
    }
}
