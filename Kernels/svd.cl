/* One-sided Jacobi (Hestenes) SVD of a batch of row-major n x n matrices.
 * CPU twin: JacobiSVD and CPUBackend.svd (Sources/NoiseARGPU/Device/CPU/CPUSVD.swift).
 *
 * The rows of a work copy W of A are orthogonalised by plane rotations (J A = W), so
 * S = row norms of W (sorted descending), Vh = normalised rows and U = J^T, recovered as the
 * columns of A Vh^T (a GEMM on the host side) made orthonormal by Gram-Schmidt.
 *
 * Each pair of rows is handled by a whole work-group of SVD_WG items (item l owns the
 * elements l, l + SVD_WG, ... of every row, so no item reads what another wrote): partial dot
 * products, a work-group sum, the same rotation decision in every item. A sweep is 2T
 * launches: the rows split into 2T blocks, rounds 0 .. 2T-2 pair the blocks by the circle
 * method (T work-groups per matrix, each taking one block pair), the last launch takes every
 * block's own pairs (2T work-groups). state[b] records whether matrix b rotated anything in
 * the sweep, state[batch + b] marks a converged matrix (skipped), state[2 batch + b] holds
 * its Frobenius norm.
 *
 * Dot products accumulate in double where the device has cl_khr_fp64, else in float (the
 * tolerance then should not be far below sqrt(n) * 6e-8). */
#ifndef SVD_WG
#define SVD_WG 1
#endif

#if defined(cl_khr_fp64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
#else
typedef float acc_t;
#endif

/* Rows below this fraction of the Frobenius norm count as zero (as on the CPU). */
#define SVD_NEGLIGIBLE 1e-15f

/* Sums three values over the work-group; every item gets the sums. */
inline void svd_sum3(local acc_t* red, acc_t* a, acc_t* b, acc_t* c) {
#if SVD_WG > 1
    int l = get_local_id(0);
    red[l] = *a;
    red[SVD_WG + l] = *b;
    red[2 * SVD_WG + l] = *c;
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
    for (int s = SVD_WG / 2; s > 0; s >>= 1) {
        if (l < s) {
            red[l] += red[l + s];
            red[SVD_WG + l] += red[SVD_WG + l + s];
            red[2 * SVD_WG + l] += red[2 * SVD_WG + l + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *a = red[0];
    *b = red[SVD_WG];
    *c = red[2 * SVD_WG];
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
}

/* |x|^2 over the work-group (every item gets it). */
inline acc_t svd_norm2(global const float* x, int n, local acc_t* red) {
    acc_t a = 0, b = 0, c = 0;
    for (int k = get_local_id(0); k < n; k += SVD_WG) {
        acc_t v = x[k];
        a += v * v;
    }
    svd_sum3(red, &a, &b, &c);
    return a;
}

#if SVD_WG == 1
/* One item per pair (CPU devices): float8 products summed in float over chunks of 32
 * elements, the chunks in acc_t (cosine error near 1e-8, as in the CPU twin). */
inline float svd_hsum8(float8 v) {
    float4 h = v.lo + v.hi;
    return (h.x + h.y) + (h.z + h.w);
}

inline acc_t svd_dot1(global const float* x, global const float* y, int n) {
    acc_t p = 0;
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        float8 f = vload8(0, x + k) * vload8(0, y + k) + vload8(1, x + k) * vload8(1, y + k)
                 + vload8(2, x + k) * vload8(2, y + k) + vload8(3, x + k) * vload8(3, y + k);
        p += svd_hsum8(f);
    }
    for (; k < n; ++k) p += (acc_t)x[k] * y[k];
    return p;
}

inline void svd_dot3(global const float* x, global const float* y, int n, acc_t* a, acc_t* b, acc_t* p) {
    acc_t sa = 0, sb = 0, sp = 0;
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        float8 fa = 0.0f, fb = 0.0f, fp = 0.0f;
        for (int c = 0; c < 4; ++c) {
            float8 xv = vload8(c, x + k), yv = vload8(c, y + k);
            fa += xv * xv;
            fb += yv * yv;
            fp += xv * yv;
        }
        sa += svd_hsum8(fa);
        sb += svd_hsum8(fb);
        sp += svd_hsum8(fp);
    }
    for (; k < n; ++k) {
        acc_t xv = x[k], yv = y[k];
        sa += xv * xv;
        sb += yv * yv;
        sp += xv * yv;
    }
    *a = sa;
    *b = sb;
    *p = sp;
}

inline void svd_rotate(global float* x, global float* y, int n, float c, float s) {
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        float8 xv = vload8(0, x + k), yv = vload8(0, y + k);
        vstore8(c * xv - s * yv, 0, x + k);
        vstore8(s * xv + c * yv, 0, y + k);
    }
    for (; k < n; ++k) {
        float xv = x[k], yv = y[k];
        x[k] = c * xv - s * yv;
        y[k] = s * xv + c * yv;
    }
}
#else
/* A work-group per pair (GPUs): item l takes elements l, l + SVD_WG, ... (coalesced). */
inline acc_t svd_dot1(global const float* x, global const float* y, int n, local acc_t* red) {
    acc_t p = 0, z0 = 0, z1 = 0;
    for (int k = get_local_id(0); k < n; k += SVD_WG) p += (acc_t)x[k] * y[k];
    svd_sum3(red, &p, &z0, &z1);
    return p;
}

inline void svd_dot3(global const float* x, global const float* y, int n, acc_t* a, acc_t* b, acc_t* p,
                     local acc_t* red) {
    acc_t sa = 0, sb = 0, sp = 0;
    for (int k = get_local_id(0); k < n; k += SVD_WG) {
        acc_t xv = x[k], yv = y[k];
        sa += xv * xv;
        sb += yv * yv;
        sp += xv * yv;
    }
    svd_sum3(red, &sa, &sb, &sp);
    *a = sa;
    *b = sb;
    *p = sp;
}

inline void svd_rotate(global float* x, global float* y, int n, float c, float s) {
    for (int k = get_local_id(0); k < n; k += SVD_WG) {
        float xv = x[k], yv = y[k];
        x[k] = c * xv - s * yv;
        y[k] = s * xv + c * yv;
    }
}
#endif

#if SVD_WG == 1
#define SVD_DOT1(x, y) svd_dot1(x, y, n)
#define SVD_DOT3(x, y, a, b, p) svd_dot3(x, y, n, a, b, p)
#else
#define SVD_DOT1(x, y) svd_dot1(x, y, n, red)
#define SVD_DOT3(x, y, a, b, p) svd_dot3(x, y, n, a, b, p, red)
#endif

/* Rotates rows i and j to orthogonality when |cos| > tol; returns whether it did. nrm holds
 * the squared row norms: exact at the start of a sweep, updated by the rotation formulas while
 * angles are large, recomputed from the rows once a pair is nearly orthogonal (as on the CPU).
 * Every item computes the same values; item 0 writes them. */
inline int svd_pair(global float* w, global acc_t* nrm, int n, int i, int j, acc_t tol, acc_t small,
                    local acc_t* red) {
    global float* x = w + i * n;
    global float* y = w + j * n;
    acc_t p = SVD_DOT1(x, y);
    acc_t a = nrm[i], b = nrm[j];
    if (a <= small || b <= small) return 0;
    acc_t scale = sqrt(a * b);
    if (fabs(p) <= tol * scale) return 0;
    int l = get_local_id(0);
    if (fabs(p) < 1e-3f * scale) {
        SVD_DOT3(x, y, &a, &b, &p);
        if (l == 0) {
            nrm[i] = a;
            nrm[j] = b;
        }
        if (a <= small || b <= small || fabs(p) <= tol * sqrt(a * b)) return 0;
    }
    /* x' = c x - s y, y' = s x + c y; t = s / c, the smaller root of t^2 + 2 zeta t - 1 = 0;
     * then |x'|^2 = a - t p and |y'|^2 = b + t p. */
    acc_t zeta = (b - a) / (2 * p);
    acc_t t = (zeta >= 0 ? (acc_t)1 : (acc_t)-1) / (fabs(zeta) + sqrt(1 + zeta * zeta));
    acc_t c = 1 / sqrt(1 + t * t);
    svd_rotate(x, y, n, (float)c, (float)(c * t));
#if SVD_WG > 1
    /* Every item has read nrm[i], nrm[j] for this pair before item 0 overwrites them. */
    barrier(CLK_GLOBAL_MEM_FENCE);
#endif
    if (l == 0) {
        nrm[i] = fmax(a - t * p, (acc_t)0);
        nrm[j] = b + t * p;
    }
    return 1;
}

/* Position of player x in round r of a circle-method round robin of m players. */
inline int svd_rr(int x, int r, int m) { return x == 0 ? 0 : (x - 1 + r) % (m - 1) + 1; }

/* W = A, per-matrix state reset, Frobenius norms. Work-group (SVD_WG, 1) per matrix. */
kernel void svd_prepare(global const float* a, int aoff, global float* w, int n,
                        global float* state, int batch) {
    local acc_t red[3 * SVD_WG];
    int b = get_group_id(1), l = get_local_id(0);
    int nn = n * n;
    global const float* src = a + aoff + (size_t)b * nn;
    global float* dst = w + (size_t)b * nn;
    acc_t s = 0, z0 = 0, z1 = 0;
    for (int k = l; k < nn; k += SVD_WG) {
        float v = src[k];
        dst[k] = v;
        s += (acc_t)v * v;
    }
    svd_sum3(red, &s, &z0, &z1);
    if (l == 0) {
        state[b] = 0.0f;
        state[batch + b] = (n < 2 || s == 0) ? 1.0f : 0.0f;
        state[2 * batch + b] = (float)sqrt(s);
    }
}

/* One launch of a sweep: round < blocks - 1 pairs block svd_rr(g) with svd_rr(blocks-1-g);
 * round == blocks - 1 takes block g's own pairs. Work-groups (SVD_WG, 1), dims (group, matrix). */
kernel void svd_round(global float* w, global acc_t* norms, int n, int blocks, int round,
                      global float* state, int batch, float tol) {
    local acc_t red[3 * SVD_WG];
    int g = get_group_id(0), b = get_group_id(1);
    if (state[batch + b] != 0.0f) return; /* converged (uniform over the work-group) */
    global float* m = w + (size_t)b * n * n;
    global acc_t* nb = norms + b * n;
    int bi = g, bj = g;
    if (round < blocks - 1) {
        bi = svd_rr(g, round, blocks);
        bj = svd_rr(blocks - 1 - g, round, blocks);
    }
    acc_t frob = state[2 * batch + b];
    acc_t small = frob * SVD_NEGLIGIBLE;
    small *= frob * SVD_NEGLIGIBLE;
    int i1 = (bi + 1) * n / blocks, j0 = bj * n / blocks, j1 = (bj + 1) * n / blocks;
    int any = 0;
    for (int i = bi * n / blocks; i < i1; ++i) {
        for (int j = (bi == bj ? i + 1 : j0); j < j1; ++j) any |= svd_pair(m, nb, n, i, j, tol, small, red);
    }
    if (any && get_local_id(0) == 0) state[b] = 1.0f;
}

/* Exact squared row norms at the start of a sweep (unconverged matrices). Global (n, batch). */
kernel void svd_sweep_norms(global const float* w, global acc_t* norms, int n, global const float* state,
                            int batch) {
    int i = get_global_id(0), b = get_global_id(1);
    if (i >= n || state[batch + b] != 0.0f) return;
    global const float* x = w + ((size_t)b * n + i) * n;
    acc_t s = 0;
    for (int k = 0; k < n; ++k) s += (acc_t)x[k] * x[k];
    norms[b * n + i] = s;
}

/* Row norms of W. Global (n, batch). */
kernel void svd_norms(global const float* w, int n, global float* norms) {
    int i = get_global_id(0), b = get_global_id(1);
    if (i >= n) return;
    global const float* x = w + ((size_t)b * n + i) * n;
    acc_t s = 0;
    for (int k = 0; k < n; ++k) {
        acc_t v = x[k];
        s += v * v;
    }
    norms[b * n + i] = (float)sqrt(s);
}

/* Rank of each row by descending norm (ties by index; NaN last), S and the normalised rows
 * into Vh (zero rows for negligible norms, completed later). Global (n, batch). */
kernel void svd_sort(global const float* w, int n, global const float* norms,
                     global const float* state, int batch, global float* s, int soff,
                     global float* vt, int vtoff) {
    int i = get_global_id(0), b = get_global_id(1);
    if (i >= n) return;
    global const float* nb = norms + b * n;
    float si = nb[i];
    float ki = isnan(si) ? -1.0f : si;
    int rank = 0;
    for (int j = 0; j < n; ++j) {
        float kj = isnan(nb[j]) ? -1.0f : nb[j];
        rank += (kj > ki || (kj == ki && j < i)) ? 1 : 0;
    }
    s[soff + b * n + rank] = si;
    float threshold = state[2 * batch + b] * SVD_NEGLIGIBLE;
    global const float* x = w + ((size_t)b * n + i) * n;
    global float* row = vt + vtoff + ((size_t)b * n + rank) * n;
    if (si > threshold && isfinite(si)) {
        float inv = (float)(1 / (acc_t)si);
        for (int k = 0; k < n; ++k) row[k] = x[k] * inv;
    } else {
        for (int k = 0; k < n; ++k) row[k] = 0.0f;
    }
}

/* x = row k of q minus its projections on rows 0..k-1 (one classical Gram-Schmidt pass). */
inline void svd_project(global float* q, int n, int k, global float* proj) {
    int l = get_local_id(0);
    global float* x = q + k * n;
    for (int j = l; j < k; j += SVD_WG) {
        global const float* qj = q + j * n;
        acc_t d = 0;
        for (int e = 0; e < n; ++e) d += (acc_t)qj[e] * x[e];
        proj[j] = (float)d;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
#if SVD_WG == 1
    for (int j = 0; j < k; ++j) {
        float pj = proj[j];
        global const float* qj = q + j * n;
        for (int e = 0; e < n; ++e) x[e] -= pj * qj[e];
    }
#else
    for (int e = l; e < n; e += SVD_WG) {
        acc_t v = x[e];
        for (int j = 0; j < k; ++j) v -= (acc_t)proj[j] * q[j * n + e];
        x[e] = (float)v;
    }
#endif
    barrier(CLK_GLOBAL_MEM_FENCE);
}

/* Makes row k of q orthonormal to rows 0..k-1 (Gram-Schmidt, a second pass when the first
 * cancels much of it); with `complete` set, or when the row vanishes, the next unit vector
 * e_next not in the span of the earlier rows replaces it. Returns the next unused unit vector
 * (a value, not a pointer to private memory: work-group loops across barriers may keep
 * private variables per item in ways that break such pointers). */
inline int svd_orthonormalize_row(global float* q, int n, int k, int complete, int next,
                                  global float* proj, local acc_t* red) {
    global float* x = q + k * n;
    int l = get_local_id(0);
    int usable = 0;
    if (!complete) {
        acc_t before = svd_norm2(x, n, red);
        svd_project(q, n, k, proj);
        acc_t after = svd_norm2(x, n, red);
        if (after < 0.25f * before) {
            before = after;
            svd_project(q, n, k, proj);
            after = svd_norm2(x, n, red);
        }
        usable = before > 0 && after > 1e-8f * before;
    }
    acc_t keep = 0.25f / n;
    while (!usable && next < n) {
        for (int e = l; e < n; e += SVD_WG) x[e] = e == next ? 1.0f : 0.0f;
        next += 1;
        barrier(CLK_GLOBAL_MEM_FENCE);
        svd_project(q, n, k, proj);
        svd_project(q, n, k, proj);
        usable = svd_norm2(x, n, red) > keep;
    }
    acc_t nrm = svd_norm2(x, n, red);
    if (nrm > 0) {
        float inv = (float)(1 / sqrt(nrm));
        for (int e = l; e < n; e += SVD_WG) x[e] *= inv;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    return next;
}

/* Gram-Schmidt in descending order of S over the rows of Ut (= (A Vh^T)^T) and completion of
 * the Vh rows of negligible singular values. Work-group (SVD_WG, 1) per matrix. */
kernel void svd_orthonormalize(global float* ut, global float* vt, int vtoff,
                               global const float* s, int soff, global const float* state,
                               int batch, global float* proj, int n) {
    local acc_t red[3 * SVD_WG];
    int b = get_group_id(1);
    global float* utb = ut + (size_t)b * n * n;
    global float* vtb = vt + vtoff + (size_t)b * n * n;
    global float* pb = proj + b * n;
    float threshold = state[2 * batch + b] * SVD_NEGLIGIBLE;
    int nextU = 0, nextV = 0;
    for (int k = 0; k < n; ++k) {
        int negligible = !(s[soff + b * n + k] > threshold);
        if (negligible) nextV = svd_orthonormalize_row(vtb, n, k, 1, nextV, pb, red);
        nextU = svd_orthonormalize_row(utb, n, k, negligible, nextU, pb, red);
    }
}
