#version 450
// variants: fp64
#include "common.glsl"
/* Twin of svd_round (Kernels/svd.cl): one launch of a one-sided Jacobi sweep. Round
 * < blocks - 1 pairs block svd_rr(g) with svd_rr(blocks - 1 - g); round == blocks - 1 takes
 * block g's own pairs. Launched 2-D, global (groups * SVD_WG, batch), work-group (SVD_WG, 1):
 * group (g, matrix b). Item l owns the elements l, l + SVD_WG, ... of every row; dot products
 * are summed over the group, and item 0 writes the squared row norms (acc_t: double in the
 * FP64 variant, else float). With SVD_WG == 1 the dot products use the OpenCL kernel's float8
 * scheme (float partial sums over chunks of 32 elements, the chunks in acc_t), emulated with
 * vec4 pairs in the same order.
 * Differences: `norms` is coherent (item 0's norm updates are read by the other items after a
 * barrier); a work group past the round's group count (blocks / 2, or blocks in the last
 * round; never launched by the host) returns at once; fmax(v, 0) is v > 0 ? v : 0 (the same,
 * NaN included, up to the sign of a zero). */

#ifdef FP64
#define acc_t double
#else
#define acc_t float
#endif

/* Rows below this fraction of the Frobenius norm count as zero (as on the CPU). */
#define SVD_NEGLIGIBLE 1e-15

layout(std430, set = 0, binding = 0) buffer B0 { float w[]; };
layout(std430, set = 0, binding = 1) coherent buffer B1 { acc_t norms[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float state[]; };

layout(push_constant) uniform PC {
    int n;
    int blocks;
    int round_;
    int batch;
    float tol;
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

vec4 w4(int i) { return vec4(w[i], w[i + 1], w[i + 2], w[i + 3]); }

/* Horizontal sum of a float8 held as (lo, hi), as the OpenCL svd_hsum8. */
float svd_hsum8(vec4 lo, vec4 hi) {
    vec4 h = lo + hi;
    return (h.x + h.y) + (h.z + h.w);
}

/* x . y for rows starting at w[x], w[y]. */
acc_t svd_dot1(int x, int y, int n) {
    acc_t p = acc_t(0);
    if (SVD_WG == 1) {
        int k = 0;
        for (; k + 32 <= n; k += 32) {
            vec4 lo = w4(x + k) * w4(y + k) + w4(x + k + 8) * w4(y + k + 8)
                    + w4(x + k + 16) * w4(y + k + 16) + w4(x + k + 24) * w4(y + k + 24);
            vec4 hi = w4(x + k + 4) * w4(y + k + 4) + w4(x + k + 12) * w4(y + k + 12)
                    + w4(x + k + 20) * w4(y + k + 20) + w4(x + k + 28) * w4(y + k + 28);
            p += acc_t(svd_hsum8(lo, hi));
        }
        for (; k < n; ++k) p += acc_t(w[x + k]) * acc_t(w[y + k]);
    } else {
        acc_t z0 = acc_t(0), z1 = acc_t(0);
        for (int k = int(gl_LocalInvocationID.x); k < n; k += SVD_WG) p += acc_t(w[x + k]) * acc_t(w[y + k]);
        svd_sum3(p, z0, z1);
    }
    return p;
}

/* |x|^2, |y|^2 and x . y. */
void svd_dot3(int x, int y, int n, out acc_t a, out acc_t b, out acc_t p) {
    acc_t sa = acc_t(0), sb = acc_t(0), sp = acc_t(0);
    if (SVD_WG == 1) {
        int k = 0;
        for (; k + 32 <= n; k += 32) {
            vec4 falo = vec4(0.0), fahi = vec4(0.0), fblo = vec4(0.0), fbhi = vec4(0.0);
            vec4 fplo = vec4(0.0), fphi = vec4(0.0);
            for (int c = 0; c < 4; ++c) {
                vec4 xlo = w4(x + k + 8 * c), xhi = w4(x + k + 8 * c + 4);
                vec4 ylo = w4(y + k + 8 * c), yhi = w4(y + k + 8 * c + 4);
                falo += xlo * xlo;
                fahi += xhi * xhi;
                fblo += ylo * ylo;
                fbhi += yhi * yhi;
                fplo += xlo * ylo;
                fphi += xhi * yhi;
            }
            sa += acc_t(svd_hsum8(falo, fahi));
            sb += acc_t(svd_hsum8(fblo, fbhi));
            sp += acc_t(svd_hsum8(fplo, fphi));
        }
        for (; k < n; ++k) {
            acc_t xv = acc_t(w[x + k]), yv = acc_t(w[y + k]);
            sa += xv * xv;
            sb += yv * yv;
            sp += xv * yv;
        }
    } else {
        for (int k = int(gl_LocalInvocationID.x); k < n; k += SVD_WG) {
            acc_t xv = acc_t(w[x + k]), yv = acc_t(w[y + k]);
            sa += xv * xv;
            sb += yv * yv;
            sp += xv * yv;
        }
        svd_sum3(sa, sb, sp);
    }
    a = sa;
    b = sb;
    p = sp;
}

/* The rotation with one rounding per result: in double where the device has it (OpenCL
 * compilers may contract c*x - s*y into an fma; Vulkan drivers need not, and llvmpipe does
 * not, which cost the smallest singular values about a bit). */
void svd_rotate(int x, int y, int n, float c, float s) {
    for (int k = int(gl_LocalInvocationID.x); k < n; k += SVD_WG) {
        acc_t xv = acc_t(w[x + k]), yv = acc_t(w[y + k]);
        w[x + k] = float(acc_t(c) * xv - acc_t(s) * yv);
        w[y + k] = float(acc_t(s) * xv + acc_t(c) * yv);
    }
}

/* Rotates rows i and j to orthogonality when |cos| > tol; returns whether it did. nrm holds
 * the squared row norms: exact at the start of a sweep, updated by the rotation formulas while
 * angles are large, recomputed from the rows once a pair is nearly orthogonal. Every item
 * computes the same values (so every branch is uniform over the group); item 0 writes them. */
int svd_pair(int m, int nb, int n, int i, int j, acc_t tol, acc_t small) {
    int x = m + i * n;
    int y = m + j * n;
    acc_t p = svd_dot1(x, y, n);
    acc_t a = norms[nb + i], b = norms[nb + j];
    if (a <= small || b <= small) return 0;
    acc_t scale = sqrt(a * b);
    if (abs(p) <= tol * scale) return 0;
    int l = int(gl_LocalInvocationID.x);
    if (abs(p) < acc_t(1e-3) * scale) {
        svd_dot3(x, y, n, a, b, p);
        if (l == 0) {
            norms[nb + i] = a;
            norms[nb + j] = b;
        }
        if (a <= small || b <= small || abs(p) <= tol * sqrt(a * b)) return 0;
    }
    /* x' = c x - s y, y' = s x + c y; t = s / c, the smaller root of t^2 + 2 zeta t - 1 = 0;
     * then |x'|^2 = a - t p and |y'|^2 = b + t p. */
    acc_t zeta = (b - a) / (acc_t(2) * p);
    acc_t t = (zeta >= acc_t(0) ? acc_t(1) : acc_t(-1)) / (abs(zeta) + sqrt(acc_t(1) + zeta * zeta));
    acc_t c = acc_t(1) / sqrt(acc_t(1) + t * t);
    svd_rotate(x, y, n, float(c), float(c * t));
    if (SVD_WG > 1) {
        /* Every item has read norms[i], norms[j] for this pair before item 0 overwrites them. */
        memoryBarrierBuffer();
        barrier();
    }
    if (l == 0) {
        acc_t na = a - t * p;
        norms[nb + i] = na > acc_t(0) ? na : acc_t(0);
        norms[nb + j] = b + t * p;
    }
    return 1;
}

/* Position of player x in round r of a circle-method round robin of m players. */
int svd_rr(int x, int r, int m) { return x == 0 ? 0 : (x - 1 + r) % (m - 1) + 1; }

void main() {
    int g = int(gl_WorkGroupID.x), b = int(gl_WorkGroupID.y);
    int n = pc.n, blocks = pc.blocks, rnd = pc.round_, batch = pc.batch;
    if (g >= (rnd < blocks - 1 ? blocks / 2 : blocks)) return; /* uniform: not in the launch */
    if (state[batch + b] != 0.0) return; /* converged (uniform over the work-group) */
    int m = b * n * n;
    int nb = b * n;
    int bi = g, bj = g;
    if (rnd < blocks - 1) {
        bi = svd_rr(g, rnd, blocks);
        bj = svd_rr(blocks - 1 - g, rnd, blocks);
    }
    acc_t frob = acc_t(state[2 * batch + b]);
    acc_t small = frob * acc_t(SVD_NEGLIGIBLE);
    small *= frob * acc_t(SVD_NEGLIGIBLE);
    acc_t tol = acc_t(pc.tol);
    int i1 = (bi + 1) * n / blocks, j0 = bj * n / blocks, j1 = (bj + 1) * n / blocks;
    int any = 0;
    for (int i = bi * n / blocks; i < i1; ++i) {
        for (int j = (bi == bj ? i + 1 : j0); j < j1; ++j) any |= svd_pair(m, nb, n, i, j, tol, small);
    }
    if (any != 0 && gl_LocalInvocationID.x == 0u) state[b] = 1.0;
}
