/* Batched row-major GEMM: C = alpha * op(A) op(B) + beta * C.  CPU twin: CPUBackend.gemm
 * (cblas_sgemm).  Two parameter sets, chosen per device type (KernelParams.swift) and
 * overridable by defines:
 *
 *  GEMM_VARIANT 0 (CPU-style, e.g. PoCL): A and B are packed into zero-padded panels
 *    (GEMM_MR rows of A by K; K by GEMM_NR columns of B, GEMM_NR = 16 * GEMM_NV), then each
 *    work item computes one GEMM_MR x GEMM_NR block of C in registers with float16 FMAs.
 *  GEMM_VARIANT 1 (GPU-style): local-memory tiles GEMM_TSM x GEMM_TSK and GEMM_TSK x GEMM_TSN
 *    loaded cooperatively (coalesced), each item computing GEMM_WPTM x GEMM_WPTN outputs.
 *
 * Batch: flat index b over batch0 * batch1, split as (b / batch1, b % batch1). */

#ifndef GEMM_MR
#define GEMM_MR 8
#endif
#ifndef GEMM_NV
#define GEMM_NV 2
#endif
#define GEMM_NR (16 * GEMM_NV)
#ifndef GEMM_TSM
#define GEMM_TSM 64
#endif
#ifndef GEMM_TSN
#define GEMM_TSN 64
#endif
#ifndef GEMM_TSK
#define GEMM_TSK 16
#endif
#ifndef GEMM_WPTM
#define GEMM_WPTM 4
#endif
#ifndef GEMM_WPTN
#define GEMM_WPTN 4
#endif
#define GEMM_RTSM (GEMM_TSM / GEMM_WPTM)
#define GEMM_RTSN (GEMM_TSN / GEMM_WPTN)

/* Element (r, c) of op(X) for row-major X with leading dimension ld. */
#define OPX(X, trans, ld, r, c) ((trans) ? (X)[(c) * (ld) + (r)] : (X)[(r) * (ld) + (c)])

/* Ap[b][panel][k][GEMM_MR] = op(A)[panel * GEMM_MR + r, k], zero beyond M. */
kernel void gemm_pack_a(global const float* A, int aoff, int M, int K, int lda, int transA,
                        int batch1, int sA0, int sA1, global float* Ap, int panels) {
    int k = get_global_id(0), panel = get_global_id(1), b = get_global_id(2);
    if (k >= K) return;
    global const float* Ab = A + aoff + (b / batch1) * sA0 + (b % batch1) * sA1;
    global float* dst = Ap + ((size_t)(b * panels + panel) * K + k) * GEMM_MR;
    for (int r = 0; r < GEMM_MR; ++r) {
        int m = panel * GEMM_MR + r;
        dst[r] = m < M ? OPX(Ab, transA, lda, m, k) : 0.0f;
    }
}

/* Bp[b][panel][k][GEMM_NR] = op(B)[k, panel * GEMM_NR + c], zero beyond N. */
kernel void gemm_pack_b(global const float* B, int boff, int N, int K, int ldb, int transB,
                        int batch1, int sB0, int sB1, global float* Bp, int panels) {
    int k = get_global_id(0), panel = get_global_id(1), b = get_global_id(2);
    if (k >= K) return;
    global const float* Bb = B + boff + (b / batch1) * sB0 + (b % batch1) * sB1;
    global float* dst = Bp + ((size_t)(b * panels + panel) * K + k) * GEMM_NR;
    for (int c = 0; c < GEMM_NR; ++c) {
        int n = panel * GEMM_NR + c;
        dst[c] = n < N ? OPX(Bb, transB, ldb, k, n) : 0.0f;
    }
}

/* One GEMM_MR x GEMM_NR block of C per work item from packed panels. With has_bias, every
 * row of C gets bias[biasoff + (b / batch1) * sbias0 + n] added (a linear layer's bias, the
 * GEMM's epilogue); beta's term reads C from Cin at cinoff, laid out as C (C itself, or a
 * residual the product is added to); act (>= 0) is applied to every element last
 * (epilogue_act). CPU twin: CPUBackend.gemm's bias and C_in rows and its activation pass. */
kernel void gemm_packed(global const float* Ap, global const float* Bp, int K, int mpanels,
                        int npanels, global float* C, int coff, int M, int N, int ldc,
                        int batch1, int sC0, int sC1, float alpha, float beta,
                        global const float* bias, int biasoff, int has_bias, int sbias0,
                        global const float* Cin, int cinoff, int act) {
    int mp = get_global_id(0), np = get_global_id(1), b = get_global_id(2);
    if (mp >= mpanels || np >= npanels) return;
    global const float* a = Ap + (size_t)(b * mpanels + mp) * K * GEMM_MR;
    global const float* bp = Bp + (size_t)(b * npanels + np) * K * GEMM_NR;
    float16 acc0[GEMM_MR];
#if GEMM_NV > 1
    float16 acc1[GEMM_MR];
#endif
    for (int r = 0; r < GEMM_MR; ++r) {
        acc0[r] = (float16)(0.0f);
#if GEMM_NV > 1
        acc1[r] = (float16)(0.0f);
#endif
    }
#ifdef GEMM_UNROLL
#pragma unroll GEMM_UNROLL
#endif
    for (int k = 0; k < K; ++k) {
        float16 b0 = vload16(0, bp + k * GEMM_NR);
#if GEMM_NV > 1
        float16 b1 = vload16(1, bp + k * GEMM_NR);
#endif
        for (int r = 0; r < GEMM_MR; ++r) {
            float av = a[k * GEMM_MR + r];
            acc0[r] = fma((float16)(av), b0, acc0[r]);
#if GEMM_NV > 1
            acc1[r] = fma((float16)(av), b1, acc1[r]);
#endif
        }
    }
    global float* Cb = C + coff + (b / batch1) * sC0 + (b % batch1) * sC1;
    global const float* Cinb = Cin + cinoff + (b / batch1) * sC0 + (b % batch1) * sC1;
    int n0 = np * GEMM_NR;
    int lim = min(GEMM_NR, N - n0);
    /* The bias of this block's columns (zeros past N or without a bias). */
    float bvals[GEMM_NR];
    global const float* brow = bias + biasoff + (b / batch1) * sbias0 + n0;
    for (int c = 0; c < GEMM_NR; ++c) bvals[c] = (has_bias && c < lim) ? brow[c] : 0.0f;
    for (int r = 0; r < GEMM_MR; ++r) {
        int m = mp * GEMM_MR + r;
        if (m >= M) break;
        global float* crow = Cb + m * ldc + n0;
        if (beta == 0.0f && lim == GEMM_NR && act < 0) {
            vstore16(alpha * acc0[r] + vload16(0, bvals), 0, crow);
#if GEMM_NV > 1
            vstore16(alpha * acc1[r] + vload16(1, bvals), 1, crow);
#endif
            continue;
        }
        float vals[GEMM_NR];
        vstore16(acc0[r], 0, vals);
#if GEMM_NV > 1
        vstore16(acc1[r], 1, vals);
#endif
        if (beta == 0.0f) {
            for (int c = 0; c < lim; ++c) crow[c] = epilogue_act(act, alpha * vals[c] + bvals[c]);
        } else {
            global const float* cin = Cinb + m * ldc + n0;
            for (int c = 0; c < lim; ++c) crow[c] = epilogue_act(act, alpha * vals[c] + beta * cin[c] + bvals[c]);
        }
    }
}

/* GPU-style tiled GEMM. Local size (GEMM_RTSM, GEMM_RTSN); global rounded up to tiles. The
 * bias, C_in and activation epilogue as in gemm_packed. */
kernel void gemm_tiled(global const float* A, int aoff, global const float* B, int boff,
                       global float* C, int coff, int M, int N, int K, int lda, int ldb, int ldc,
                       int transA, int transB, int batch1, int sA0, int sA1, int sB0, int sB1,
                       int sC0, int sC1, float alpha, float beta,
                       global const float* bias, int biasoff, int has_bias, int sbias0,
                       global const float* Cin, int cinoff, int act) {
    local float As[GEMM_TSK][GEMM_TSM];
    local float Bs[GEMM_TSK][GEMM_TSN + 1];
    int tm = get_local_id(0), tn = get_local_id(1);
    int m0 = get_group_id(0) * GEMM_TSM, n0 = get_group_id(1) * GEMM_TSN;
    int b = get_global_id(2);
    global const float* Ab = A + aoff + (b / batch1) * sA0 + (b % batch1) * sA1;
    global const float* Bb = B + boff + (b / batch1) * sB0 + (b % batch1) * sB1;
    float acc[GEMM_WPTM][GEMM_WPTN];
    for (int i = 0; i < GEMM_WPTM; ++i)
        for (int j = 0; j < GEMM_WPTN; ++j) acc[i][j] = 0.0f;
    int tid = tm * GEMM_RTSN + tn, nthreads = GEMM_RTSM * GEMM_RTSN;
    for (int k0 = 0; k0 < K; k0 += GEMM_TSK) {
        for (int e = tid; e < GEMM_TSK * GEMM_TSM; e += nthreads) {
            /* consecutive threads take consecutive m (transA) or k (no trans): coalesced */
            int kk, mm;
            if (transA) { kk = e / GEMM_TSM; mm = e % GEMM_TSM; }
            else { mm = e / GEMM_TSK; kk = e % GEMM_TSK; }
            int gm = m0 + mm, gk = k0 + kk;
            As[kk][mm] = (gm < M && gk < K) ? OPX(Ab, transA, lda, gm, gk) : 0.0f;
        }
        for (int e = tid; e < GEMM_TSK * GEMM_TSN; e += nthreads) {
            int kk, nn;
            if (transB) { nn = e / GEMM_TSK; kk = e % GEMM_TSK; }
            else { kk = e / GEMM_TSN; nn = e % GEMM_TSN; }
            int gn = n0 + nn, gk = k0 + kk;
            Bs[kk][nn] = (gn < N && gk < K) ? OPX(Bb, transB, ldb, gk, gn) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < GEMM_TSK; ++kk) {
            float breg[GEMM_WPTN];
            for (int j = 0; j < GEMM_WPTN; ++j) breg[j] = Bs[kk][tn + j * GEMM_RTSN];
            for (int i = 0; i < GEMM_WPTM; ++i) {
                float a = As[kk][tm + i * GEMM_RTSM];
                for (int j = 0; j < GEMM_WPTN; ++j) acc[i][j] = fma(a, breg[j], acc[i][j]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    global float* Cb = C + coff + (b / batch1) * sC0 + (b % batch1) * sC1;
    for (int i = 0; i < GEMM_WPTM; ++i) {
        int m = m0 + tm + i * GEMM_RTSM;
        if (m >= M) continue;
        for (int j = 0; j < GEMM_WPTN; ++j) {
            int n = n0 + tn + j * GEMM_RTSN;
            if (n >= N) continue;
            float v = alpha * acc[i][j];
            if (beta != 0.0f) v += beta * Cin[cinoff + (b / batch1) * sC0 + (b % batch1) * sC1 + m * ldc + n];
            if (has_bias) v += bias[biasoff + (b / batch1) * sbias0 + n];
            Cb[m * ldc + n] = epilogue_act(act, v);
        }
    }
}

/* Skinny GEMM for M <= SKINNY_M rows (a decoding step's projections, where packing B would
 * copy a whole weight matrix per call): one work-group of ROW_WG items per output column n
 * and batch; the items split K (with transB, adjacent items read adjacent elements of B's
 * row n), and the partial sums meet in a local-memory tree. ROW_WG = 1 on CPUs: one item
 * per column walks its row of B, 16 columns per work-group. CPU twin: CPUBackend.gemm. */
#ifndef ROW_WG
#define ROW_WG 64
#endif
#define SKINNY_M 4
kernel void gemm_skinny(global const float* A, int aoff, global const float* B, int boff,
                        global float* C, int coff, int M, int N, int K, int lda, int ldb, int ldc,
                        int transA, int transB, int batch1, int sA0, int sA1, int sB0, int sB1,
                        int sC0, int sC1, float alpha, float beta,
                        global const float* bias, int biasoff, int has_bias, int sbias0,
                        global const float* Cin, int cinoff, int act) {
#if ROW_WG > 1
    local float red[SKINNY_M * ROW_WG];
#endif
#if ROW_WG > 1
    int n = get_group_id(0), l = get_local_id(0);
#else
    /* One item per column, many columns per work-group. */
    int n = get_global_id(0), l = 0;
    if (n >= N) return;
#endif
    int z = get_global_id(1);
    int b0 = z / batch1, b1 = z - b0 * batch1;
    global const float* a = A + aoff + b0 * sA0 + b1 * sA1;
    global const float* b = B + boff + b0 * sB0 + b1 * sB1;
    global float* c = C + coff + b0 * sC0 + b1 * sC1;
    global const float* cin = Cin + cinoff + b0 * sC0 + b1 * sC1;
    float acc[SKINNY_M];
    for (int m = 0; m < SKINNY_M; ++m) acc[m] = 0.0f;
    int am = transA ? 1 : lda, ak = transA ? lda : 1;
    int bk = transB ? 1 : ldb, bn = transB ? ldb : 1;
    int k0 = 0;
    if (transB && !transA) {
        /* Both operands contiguous along K: float4 loads, each item taking every ROW_WG-th
         * group of four; four A rows always (rows past M re-read the last one), so the loop
         * has no branches. */
        float4 c0 = (float4)(0.0f), c1 = c0, c2 = c0, c3 = c0;
        global const float* brow = b + n * ldb;
        global const float* a0 = a;
        global const float* a1 = a + min(1, M - 1) * lda;
        global const float* a2 = a + min(2, M - 1) * lda;
        global const float* a3 = a + min(3, M - 1) * lda;
        int k4 = K / 4;
        for (int q = l; q < k4; q += ROW_WG) {
            float4 bv = vload4(q, brow);
            c0 = fma(vload4(q, a0), bv, c0);
            c1 = fma(vload4(q, a1), bv, c1);
            c2 = fma(vload4(q, a2), bv, c2);
            c3 = fma(vload4(q, a3), bv, c3);
        }
        acc[0] = (c0.x + c0.y) + (c0.z + c0.w);
        acc[1] = (c1.x + c1.y) + (c1.z + c1.w);
        acc[2] = (c2.x + c2.y) + (c2.z + c2.w);
        acc[3] = (c3.x + c3.y) + (c3.z + c3.w);
        k0 = 4 * k4;
    }
    for (int k = k0 + l; k < K; k += ROW_WG) {
        float bv = b[n * bn + k * bk];
        for (int m = 0; m < SKINNY_M; ++m) {
            if (m < M) acc[m] = fma(a[m * am + k * ak], bv, acc[m]);
        }
    }
#if ROW_WG > 1
    for (int m = 0; m < SKINNY_M; ++m) red[m * ROW_WG + l] = acc[m];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ROW_WG / 2; s > 0; s >>= 1) {
        if (l < s) {
            for (int m = 0; m < SKINNY_M; ++m) red[m * ROW_WG + l] += red[m * ROW_WG + l + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int m = 0; m < SKINNY_M; ++m) acc[m] = red[m * ROW_WG];
#endif
    if (l == 0 && n < N) {
        float bn = has_bias ? bias[biasoff + b0 * sbias0 + n] : 0.0f;
        for (int m = 0; m < SKINNY_M; ++m) {
            if (m < M) {
                float r = alpha * acc[m];
                c[m * ldc + n] = epilogue_act(act, (beta == 0.0f ? r : fma(beta, cin[m * ldc + n], r)) + bn);
            }
        }
    }
}
