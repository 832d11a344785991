#version 450
#include "common.glsl"
#include "erf.glsl"
#include "unary_ops.glsl"
/* Twin of gemm_skinny (Kernels/gemm.cl): C = alpha op(A) op(B) + beta C (+ the bias row when
 * has_bias; beta's C read from Cin at cinoff, laid out as C; then the activation act when
 * >= 0) for M <= SKINNY_M (4) rows. Launched 2-D, global (N * ROW_WG, batch), work-group (ROW_WG, 1) when ROW_WG > 1
 * (one group per output column n, the items splitting K, partial sums meeting in a shared
 * tree), else work-group (min(16, limit), 1) with one item per column.
 * Differences: the float4 loads/FMAs of the transB && !transA path are vec4 FMAs on the same
 * elements in the same order; a work group past the last column (n >= N, which the OpenCL
 * launch never has) returns as a whole before any barrier, and so does a call with M < 1
 * (nothing to compute; the OpenCL kernel would read A out of bounds there). */

layout(std430, set = 0, binding = 0) buffer B0 { float A[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float B[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float C[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float bias[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float Cin[]; };

layout(push_constant) uniform PC {
    int aoff;
    int boff;
    int coff;
    int M;
    int N;
    int K;
    int lda;
    int ldb;
    int ldc;
    int transA;
    int transB;
    int batch1;
    int sA0;
    int sA1;
    int sB0;
    int sB1;
    int sC0;
    int sC1;
    float alpha;
    float beta;
    int biasoff;
    int has_bias;
    int sbias0;
    int cinoff;
    int act;
} pc;

const int SKINNY_M = 4;
shared float red[SKINNY_M * ROW_WG];

vec4 load4(int base, int q) {
    int i = base + 4 * q;
    return vec4(A[i], A[i + 1], A[i + 2], A[i + 3]);
}

vec4 loadB4(int base, int q) {
    int i = base + 4 * q;
    return vec4(B[i], B[i + 1], B[i + 2], B[i + 3]);
}

void main() {
    int n, l;
    if (ROW_WG > 1) {
        n = int(gl_WorkGroupID.x);
        l = int(gl_LocalInvocationID.x);
    } else {
        /* One item per column, many columns per work-group. */
        n = int(gl_GlobalInvocationID.x);
        l = 0;
    }
    /* Uniform per work group when ROW_WG > 1. M < 1 would read before A (as in OpenCL): nothing to do. */
    if (n >= pc.N || pc.M < 1) return;
    int M = pc.M, K = pc.K, lda = pc.lda, ldb = pc.ldb;
    int z = int(gl_GlobalInvocationID.y);
    int b0 = z / pc.batch1, b1 = z - b0 * pc.batch1;
    int a = pc.aoff + b0 * pc.sA0 + b1 * pc.sA1;
    int b = pc.boff + b0 * pc.sB0 + b1 * pc.sB1;
    int c = pc.coff + b0 * pc.sC0 + b1 * pc.sC1;
    float acc[SKINNY_M];
    for (int m = 0; m < SKINNY_M; ++m) acc[m] = 0.0;
    bool transA = pc.transA != 0, transB = pc.transB != 0;
    int am = transA ? 1 : lda, ak = transA ? lda : 1;
    int bk = transB ? 1 : ldb, bn = transB ? ldb : 1;
    int k0 = 0;
    if (transB && !transA) {
        /* Both operands contiguous along K: groups of four, each item taking every ROW_WG-th
         * group; four A rows always (rows past M re-read the last one). */
        vec4 c0 = vec4(0.0), c1 = c0, c2 = c0, c3 = c0;
        int brow = b + n * ldb;
        int a0 = a;
        int a1 = a + min(1, M - 1) * lda;
        int a2 = a + min(2, M - 1) * lda;
        int a3 = a + min(3, M - 1) * lda;
        int k4 = K / 4;
        for (int q = l; q < k4; q += ROW_WG) {
            vec4 bv = loadB4(brow, q);
            c0 = fma(load4(a0, q), bv, c0);
            c1 = fma(load4(a1, q), bv, c1);
            c2 = fma(load4(a2, q), bv, c2);
            c3 = fma(load4(a3, q), bv, c3);
        }
        acc[0] = (c0.x + c0.y) + (c0.z + c0.w);
        acc[1] = (c1.x + c1.y) + (c1.z + c1.w);
        acc[2] = (c2.x + c2.y) + (c2.z + c2.w);
        acc[3] = (c3.x + c3.y) + (c3.z + c3.w);
        k0 = 4 * k4;
    }
    for (int k = k0 + l; k < K; k += ROW_WG) {
        float bv = B[b + n * bn + k * bk];
        for (int m = 0; m < SKINNY_M; ++m) {
            if (m < M) acc[m] = fma(A[a + m * am + k * ak], bv, acc[m]);
        }
    }
    if (ROW_WG > 1) {
        for (int m = 0; m < SKINNY_M; ++m) red[m * ROW_WG + l] = acc[m];
        memoryBarrierShared();
        barrier();
        for (int s = ROW_WG / 2; s > 0; s >>= 1) {
            if (l < s) {
                for (int m = 0; m < SKINNY_M; ++m) red[m * ROW_WG + l] += red[m * ROW_WG + l + s];
            }
            memoryBarrierShared();
            barrier();
        }
        for (int m = 0; m < SKINNY_M; ++m) acc[m] = red[m * ROW_WG];
    }
    if (l == 0) {
        float bn = pc.has_bias != 0 ? bias[pc.biasoff + b0 * pc.sbias0 + n] : 0.0;
        for (int m = 0; m < SKINNY_M; ++m) {
            if (m < M) {
                float r = pc.alpha * acc[m];
                int ci = c + m * pc.ldc + n;
                C[ci] = epilogue_act(pc.act, (pc.beta == 0.0 ? r : fma(pc.beta, Cin[ci - pc.coff + pc.cinoff], r)) + bn);
            }
        }
    }
}
