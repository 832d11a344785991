#version 450
// variants: fp64
#include "common.glsl"
/* Twin of svd_sweep_norms (Kernels/svd.cl): exact squared row norms of W at the start of a
 * sweep, for unconverged matrices. Launched 2-D, global (n, batch), no local size in OpenCL
 * (work group 64 x 1 here). norms is acc_t: double in the FP64 variant, else float.
 * No differences. */

#ifdef FP64
#define acc_t double
#else
#define acc_t float
#endif

layout(std430, set = 0, binding = 0) buffer B0 { float w[]; };
layout(std430, set = 0, binding = 1) buffer B1 { acc_t norms[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float state[]; };

layout(push_constant) uniform PC {
    int n;
    int batch;
} pc;

void main() {
    int i = int(gl_GlobalInvocationID.x), b = int(gl_GlobalInvocationID.y);
    int n = pc.n;
    if (i >= n || state[pc.batch + b] != 0.0) return;
    int x = (b * n + i) * n;
    acc_t s = acc_t(0);
    for (int k = 0; k < n; ++k) s += acc_t(w[x + k]) * acc_t(w[x + k]);
    norms[b * n + i] = s;
}
