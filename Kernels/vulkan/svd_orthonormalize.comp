#version 450
// variants: fp64
#include "common.glsl"
/* Twin of svd_orthonormalize (Kernels/svd.cl): Gram-Schmidt in descending order of S over the
 * rows of Ut (= (A Vh^T)^T) and completion of the Vh rows of negligible singular values.
 * Launched 2-D, global (SVD_WG, batch), work-group (SVD_WG, 1): one group per matrix. Dot
 * products and norms accumulate in acc_t (double in the FP64 variant, else float).
 * Differences: OpenCL passes the row buffer (ut or vt) to its helpers as a pointer; here the
 * helpers take a selector (0: ut, 1: vt) and a base offset, and read/write through qget/qset.
 * ut, vt and proj are coherent (items read elements other items wrote, after barriers). A work
 * group with x index > 0 (never launched by the host) returns at once. */

#ifdef FP64
#define acc_t double
#else
#define acc_t float
#endif

#define SVD_NEGLIGIBLE 1e-15

layout(std430, set = 0, binding = 0) coherent buffer B0 { float ut[]; };
layout(std430, set = 0, binding = 1) coherent buffer B1 { float vt[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float s[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float state[]; };
layout(std430, set = 0, binding = 4) coherent buffer B4 { float proj[]; };

layout(push_constant) uniform PC {
    int vtoff;
    int soff;
    int batch;
    int n;
} pc;

shared acc_t red[3 * SVD_WG];

float qget(int which, int i) { return which == 0 ? ut[i] : vt[i]; }

void qset(int which, int i, float v) {
    if (which == 0) ut[i] = v;
    else vt[i] = v;
}

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

/* |x|^2 over the work-group (every item gets it); x = row starting at element x of q. */
acc_t svd_norm2(int which, int x, int n) {
    acc_t a = acc_t(0), b = acc_t(0), c = acc_t(0);
    for (int k = int(gl_LocalInvocationID.x); k < n; k += SVD_WG) {
        acc_t v = acc_t(qget(which, x + k));
        a += v * v;
    }
    svd_sum3(a, b, c);
    return a;
}

/* x = row k of q minus its projections on rows 0..k-1 (one classical Gram-Schmidt pass). */
void svd_project(int which, int q, int n, int k, int pb) {
    int l = int(gl_LocalInvocationID.x);
    int x = q + k * n;
    for (int j = l; j < k; j += SVD_WG) {
        int qj = q + j * n;
        acc_t d = acc_t(0);
        for (int e = 0; e < n; ++e) d += acc_t(qget(which, qj + e)) * acc_t(qget(which, x + e));
        proj[pb + j] = float(d);
    }
    memoryBarrierBuffer();
    barrier();
    if (SVD_WG == 1) {
        for (int j = 0; j < k; ++j) {
            float pj = proj[pb + j];
            int qj = q + j * n;
            for (int e = 0; e < n; ++e) qset(which, x + e, qget(which, x + e) - pj * qget(which, qj + e));
        }
    } else {
        for (int e = l; e < n; e += SVD_WG) {
            acc_t v = acc_t(qget(which, x + e));
            for (int j = 0; j < k; ++j) v -= acc_t(proj[pb + j]) * acc_t(qget(which, q + j * n + e));
            qset(which, x + e, float(v));
        }
    }
    memoryBarrierBuffer();
    barrier();
}

/* Makes row k of q orthonormal to rows 0..k-1 (Gram-Schmidt, a second pass when the first
 * cancels much of it); with `complete` set, or when the row vanishes, the next unit vector
 * e_next not in the span of the earlier rows replaces it. Returns the next unused unit vector.
 * Every branch is uniform over the group (the conditions are work-group sums). */
int svd_orthonormalize_row(int which, int q, int n, int k, bool complete, int next, int pb) {
    int x = q + k * n;
    int l = int(gl_LocalInvocationID.x);
    bool usable = false;
    if (!complete) {
        acc_t before = svd_norm2(which, x, n);
        svd_project(which, q, n, k, pb);
        acc_t after = svd_norm2(which, x, n);
        if (after < acc_t(0.25) * before) {
            before = after;
            svd_project(which, q, n, k, pb);
            after = svd_norm2(which, x, n);
        }
        usable = before > acc_t(0) && after > acc_t(1e-8) * before;
    }
    acc_t keep = acc_t(0.25 / float(n));
    while (!usable && next < n) {
        for (int e = l; e < n; e += SVD_WG) qset(which, x + e, e == next ? 1.0 : 0.0);
        next += 1;
        memoryBarrierBuffer();
        barrier();
        svd_project(which, q, n, k, pb);
        svd_project(which, q, n, k, pb);
        usable = svd_norm2(which, x, n) > keep;
    }
    acc_t nrm = svd_norm2(which, x, n);
    if (nrm > acc_t(0)) {
        float inv = float(acc_t(1) / sqrt(nrm));
        for (int e = l; e < n; e += SVD_WG) qset(which, x + e, qget(which, x + e) * inv);
    }
    memoryBarrierBuffer();
    barrier();
    return next;
}

void main() {
    if (gl_WorkGroupID.x != 0u) return; /* uniform over the work group */
    int b = int(gl_WorkGroupID.y);
    int n = pc.n, batch = pc.batch;
    int utb = b * n * n;
    int vtb = pc.vtoff + b * n * n;
    int pb = b * n;
    float threshold = state[2 * batch + b] * float(SVD_NEGLIGIBLE);
    int nextU = 0, nextV = 0;
    for (int k = 0; k < n; ++k) {
        bool negligible = !(s[pc.soff + b * n + k] > threshold);
        if (negligible) nextV = svd_orthonormalize_row(1, vtb, n, k, true, nextV, pb);
        nextU = svd_orthonormalize_row(0, utb, n, k, negligible, nextU, pb);
    }
}
