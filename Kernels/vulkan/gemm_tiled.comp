#version 450
#include "common.glsl"
#include "erf.glsl"
#include "unary_ops.glsl"
/* Twin of gemm_tiled (Kernels/gemm.cl): batched row-major GEMM C = alpha op(A) op(B) + beta C
 * (+ the bias row when has_bias; beta's C read from Cin at cinoff, laid out as C; then the
 * activation act when >= 0)
 * with local-memory tiles GEMM_TSK x GEMM_TSM of op(A) and GEMM_TSK x GEMM_TSN (+1 padding) of
 * op(B); each item computes GEMM_WPTM x GEMM_WPTN outputs. Launched 3-D: work-group
 * (GEMM_TSM / GEMM_WPTM, GEMM_TSN / GEMM_WPTN, 1), groups (tiles of M, tiles of N, batch).
 * Differences: the 2-D local arrays are flattened (same layout); a batch index past the
 * launch cannot occur (z has local size 1), work groups past the tiles of M or N only skip
 * their stores (every item always reaches both barriers). */

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

const int RTSM = GEMM_TSM / GEMM_WPTM;
const int RTSN = GEMM_TSN / GEMM_WPTN;
const int BSTRIDE = GEMM_TSN + 1;

shared float As[GEMM_TSK * GEMM_TSM];          /* As[kk][mm] at kk * GEMM_TSM + mm */
shared float Bs[GEMM_TSK * (GEMM_TSN + 1)];    /* Bs[kk][nn] at kk * (GEMM_TSN + 1) + nn */

void main() {
    int tm = int(gl_LocalInvocationID.x), tn = int(gl_LocalInvocationID.y);
    int m0 = int(gl_WorkGroupID.x) * GEMM_TSM, n0 = int(gl_WorkGroupID.y) * GEMM_TSN;
    int b = int(gl_GlobalInvocationID.z);
    int M = pc.M, N = pc.N, K = pc.K;
    int bq = b / pc.batch1, br = b % pc.batch1;
    int Ab = pc.aoff + bq * pc.sA0 + br * pc.sA1;
    int Bb = pc.boff + bq * pc.sB0 + br * pc.sB1;
    float acc[GEMM_WPTM * GEMM_WPTN];
    for (int i = 0; i < GEMM_WPTM * GEMM_WPTN; ++i) acc[i] = 0.0;
    int tid = tm * RTSN + tn, nthreads = RTSM * RTSN;
    for (int k0 = 0; k0 < K; k0 += GEMM_TSK) {
        for (int e = tid; e < GEMM_TSK * GEMM_TSM; e += nthreads) {
            /* consecutive threads take consecutive m (transA) or k (no trans): coalesced */
            int kk, mm;
            if (pc.transA != 0) { kk = e / GEMM_TSM; mm = e % GEMM_TSM; }
            else { mm = e / GEMM_TSK; kk = e % GEMM_TSK; }
            int gm = m0 + mm, gk = k0 + kk;
            float v = 0.0;
            if (gm < M && gk < K)
                v = pc.transA != 0 ? A[Ab + gk * pc.lda + gm] : A[Ab + gm * pc.lda + gk];
            As[kk * GEMM_TSM + mm] = v;
        }
        for (int e = tid; e < GEMM_TSK * GEMM_TSN; e += nthreads) {
            int kk, nn;
            if (pc.transB != 0) { nn = e / GEMM_TSK; kk = e % GEMM_TSK; }
            else { kk = e / GEMM_TSN; nn = e % GEMM_TSN; }
            int gn = n0 + nn, gk = k0 + kk;
            float v = 0.0;
            if (gn < N && gk < K)
                v = pc.transB != 0 ? B[Bb + gn * pc.ldb + gk] : B[Bb + gk * pc.ldb + gn];
            Bs[kk * BSTRIDE + nn] = v;
        }
        memoryBarrierShared();
        barrier();
        for (int kk = 0; kk < GEMM_TSK; ++kk) {
            float breg[GEMM_WPTN];
            for (int j = 0; j < GEMM_WPTN; ++j) breg[j] = Bs[kk * BSTRIDE + tn + j * RTSN];
            for (int i = 0; i < GEMM_WPTM; ++i) {
                float a = As[kk * GEMM_TSM + tm + i * RTSM];
                for (int j = 0; j < GEMM_WPTN; ++j)
                    acc[i * GEMM_WPTN + j] = fma(a, breg[j], acc[i * GEMM_WPTN + j]);
            }
        }
        memoryBarrierShared();
        barrier();
    }
    int Cb = pc.coff + bq * pc.sC0 + br * pc.sC1;
    for (int i = 0; i < GEMM_WPTM; ++i) {
        int m = m0 + tm + i * RTSM;
        if (m >= M) continue;
        for (int j = 0; j < GEMM_WPTN; ++j) {
            int n = n0 + tn + j * RTSN;
            if (n >= N) continue;
            float v = pc.alpha * acc[i * GEMM_WPTN + j];
            if (pc.beta != 0.0) v += pc.beta * Cin[Cb - pc.coff + pc.cinoff + m * pc.ldc + n];
            if (pc.has_bias != 0) v += bias[pc.biasoff + bq * pc.sbias0 + n];
            C[Cb + m * pc.ldc + n] = epilogue_act(pc.act, v);
        }
    }
}
