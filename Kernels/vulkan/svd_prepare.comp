#version 450
// variants: fp64
#include "common.glsl"
/* Twin of svd_prepare (Kernels/svd.cl): W = A, per-matrix state reset, Frobenius norms.
 * Launched 2-D, global (SVD_WG, batch), work-group (SVD_WG, 1): one group per matrix.
 * acc_t is double in the FP64 variant (OpenCL devices with cl_khr_fp64), else float.
 * Differences: a work group with x index > 0 (never launched by the host) returns at once. */

#ifdef FP64
#define acc_t double
#else
#define acc_t float
#endif

layout(std430, set = 0, binding = 0) buffer B0 { float a[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float w[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float state[]; };

layout(push_constant) uniform PC {
    int aoff;
    int n;
    int batch;
} pc;

shared acc_t red[3 * SVD_WG];

/* Sums three values over the work-group; every item gets the sums. */
void svd_sum3(inout acc_t x, inout acc_t y, inout acc_t z) {
    if (SVD_WG > 1) {
        int l = int(gl_LocalInvocationID.x);
        red[l] = x;
        red[SVD_WG + l] = y;
        red[2 * SVD_WG + l] = z;
        memoryBarrierBuffer();
        memoryBarrierShared();
        barrier();
        for (int s = SVD_WG / 2; s > 0; s >>= 1) {
            if (l < s) {
                red[l] += red[l + s];
                red[SVD_WG + l] += red[SVD_WG + l + s];
                red[2 * SVD_WG + l] += red[2 * SVD_WG + l + s];
            }
            memoryBarrierShared();
            barrier();
        }
        x = red[0];
        y = red[SVD_WG];
        z = red[2 * SVD_WG];
        memoryBarrierShared();
        barrier();
    }
}

void main() {
    if (gl_WorkGroupID.x != 0u) return; /* uniform over the work group */
    int b = int(gl_WorkGroupID.y), l = int(gl_LocalInvocationID.x);
    int n = pc.n, batch = pc.batch;
    int nn = n * n;
    int src = pc.aoff + b * nn;
    int dst = b * nn;
    acc_t s = acc_t(0), z0 = acc_t(0), z1 = acc_t(0);
    for (int k = l; k < nn; k += SVD_WG) {
        float v = a[src + k];
        w[dst + k] = v;
        s += acc_t(v) * acc_t(v);
    }
    svd_sum3(s, z0, z1);
    if (l == 0) {
        state[b] = 0.0;
        state[batch + b] = (n < 2 || s == acc_t(0)) ? 1.0 : 0.0;
        state[2 * batch + b] = float(sqrt(s));
    }
}
