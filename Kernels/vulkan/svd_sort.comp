#version 450
// variants: fp64
#include "common.glsl"
/* Twin of svd_sort (Kernels/svd.cl): rank of each row by descending norm (ties by index, NaN
 * last), S and the normalised rows into Vh (zero rows for negligible norms, completed later).
 * Launched 2-D, global (n, batch), no local size in OpenCL (work group 64 x 1 here). The
 * reciprocal is taken in acc_t (double in the FP64 variant, else float).
 * Differences: isfinite(x) is written !isinf(x) && !isnan(x). */

#ifdef FP64
#define acc_t double
#else
#define acc_t float
#endif

#define SVD_NEGLIGIBLE 1e-15

layout(std430, set = 0, binding = 0) buffer B0 { float w[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float norms[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float state[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float s[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float vt[]; };

layout(push_constant) uniform PC {
    int n;
    int batch;
    int soff;
    int vtoff;
} pc;

void main() {
    int i = int(gl_GlobalInvocationID.x), b = int(gl_GlobalInvocationID.y);
    int n = pc.n;
    if (i >= n) return;
    int nb = b * n;
    float si = norms[nb + i];
    float ki = isnan(si) ? -1.0 : si;
    int rank = 0;
    for (int j = 0; j < n; ++j) {
        float nj = norms[nb + j];
        float kj = isnan(nj) ? -1.0 : nj;
        rank += (kj > ki || (kj == ki && j < i)) ? 1 : 0;
    }
    s[pc.soff + b * n + rank] = si;
    float threshold = state[2 * pc.batch + b] * float(SVD_NEGLIGIBLE);
    int x = (b * n + i) * n;
    int row = pc.vtoff + (b * n + rank) * n;
    if (si > threshold && !isinf(si) && !isnan(si)) {
        float inv = float(acc_t(1) / acc_t(si));
        for (int k = 0; k < n; ++k) vt[row + k] = w[x + k] * inv;
    } else {
        for (int k = 0; k < n; ++k) vt[row + k] = 0.0;
    }
}
