#version 450
// variants: fp64
#include "common.glsl"
/* Twin of svd_norms (Kernels/svd.cl): row norms of W (accumulated in acc_t: double in the
 * FP64 variant, else float; stored as float). Launched 2-D, global (n, batch), no local size
 * in OpenCL (work group 64 x 1 here). No differences. */

#ifdef FP64
#define acc_t double
#else
#define acc_t float
#endif

layout(std430, set = 0, binding = 0) buffer B0 { float w[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float norms[]; };

layout(push_constant) uniform PC {
    int n;
} pc;

void main() {
    int i = int(gl_GlobalInvocationID.x), b = int(gl_GlobalInvocationID.y);
    int n = pc.n;
    if (i >= n) return;
    int x = (b * n + i) * n;
    acc_t s = acc_t(0);
    for (int k = 0; k < n; ++k) {
        acc_t v = acc_t(w[x + k]);
        s += v * v;
    }
    norms[b * n + i] = float(sqrt(s));
}
