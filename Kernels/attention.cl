/* Fused multi-head attention with an online softmax (one pass over the keys, no scores in
 * memory): O = softmax(scale * Q K^T + bias + causal) V.  CPU twin: CPUBackend.attention.
 *
 * Build-time defines: ATT_D (head dim), ATT_DV (value dim), ATT_VW (vector width dividing both),
 * ATT_QB (queries per work item), ATT_KB (keys per block), ATT_WG (work items per group),
 * ATT_LOCAL (1: K/V blocks staged in local memory by the whole group, GPU-style).
 * Grid: (ceil(Tq / (ATT_QB * ATT_WG)) * ATT_WG, heads, batch). */

#ifndef ATT_QB
#define ATT_QB 1
#endif
#ifndef ATT_KB
#define ATT_KB 16
#endif
#ifndef ATT_WG
#define ATT_WG 1
#endif
#ifndef ATT_LOCAL
#define ATT_LOCAL 0
#endif

#if ATT_VW == 1
#define VT float
#define VLOAD(i, p) ((p)[i])
#define VSTORE(v, i, p) ((p)[i] = (v))
#define HSUM(v) (v)
#elif ATT_VW == 2
#define VT float2
#define VLOAD(i, p) vload2(i, p)
#define VSTORE(v, i, p) vstore2(v, i, p)
#define HSUM(v) ((v).s0 + (v).s1)
#elif ATT_VW == 4
#define VT float4
#define VLOAD(i, p) vload4(i, p)
#define VSTORE(v, i, p) vstore4(v, i, p)
#define HSUM(v) (((v).s0 + (v).s1) + ((v).s2 + (v).s3))
#elif ATT_VW == 8
#define VT float8
#define VLOAD(i, p) vload8(i, p)
#define VSTORE(v, i, p) vstore8(v, i, p)
#define HSUM(v) ((((v).s0 + (v).s1) + ((v).s2 + (v).s3)) + (((v).s4 + (v).s5) + ((v).s6 + (v).s7)))
#else
#define VT float16
#define VLOAD(i, p) vload16(i, p)
#define VSTORE(v, i, p) vstore16(v, i, p)
#define HSUM(v) (((((v).s0 + (v).s1) + ((v).s2 + (v).s3)) + (((v).s4 + (v).s5) + ((v).s6 + (v).s7))) + \
                 ((((v).s8 + (v).s9) + ((v).sa + (v).sb)) + (((v).sc + (v).sd) + ((v).se + (v).sf))))
#endif
#define NQV (ATT_D / ATT_VW)
#define NOV (ATT_DV / ATT_VW)

kernel void attention_fwd(global const float* Q, int qoff, int qsb, int qsh, int qst,
                          global const float* K, int koff, int ksb, int ksh, int kst,
                          global const float* V, int voff, int vsb, int vsh, int vst,
                          global const float* bias, int boff, int bias_b, int bias_h,
                          global float* O, int ooff, int osb, int osh, int ost,
                          int Tq, int Tk, float scale, int causal) {
    int item = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    int q0 = item * ATT_QB;
    global const float* Kb = K + koff + b * ksb + h * ksh;
    global const float* Vb = V + voff + b * vsb + h * vsh;
    global const float* Bb = bias_b > 0
        ? bias + boff + ((b % bias_b) * bias_h + (h % bias_h)) * Tq * Tk : bias;
    VT q[ATT_QB][NQV];
    VT acc[ATT_QB][NOV];
    float m[ATT_QB], l[ATT_QB];
    for (int i = 0; i < ATT_QB; ++i) {
        int qi = min(q0 + i, Tq - 1);
        global const float* qr = Q + qoff + b * qsb + h * qsh + qi * qst;
        for (int d = 0; d < NQV; ++d) q[i][d] = VLOAD(d, qr) * scale;
        for (int d = 0; d < NOV; ++d) acc[i][d] = (VT)(0.0f);
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    /* Keys this group needs (uniform across the group for barriers). */
    int kend = Tk;
    if (causal) {
        int last_q = min((int)(get_group_id(0) + 1) * ATT_WG * ATT_QB, Tq) - 1;
        kend = min(Tk, last_q + Tk - Tq + 1);
    }
#if ATT_LOCAL
    local float Ks[ATT_KB * ATT_D];
    local float Vs[ATT_KB * ATT_DV];
#endif
    for (int k0 = 0; k0 < kend; k0 += ATT_KB) {
        int kn = min(ATT_KB, kend - k0);
#if ATT_LOCAL
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = get_local_id(0); e < kn * ATT_D; e += ATT_WG)
            Ks[e] = Kb[(k0 + e / ATT_D) * kst + e % ATT_D];
        for (int e = get_local_id(0); e < kn * ATT_DV; e += ATT_WG)
            Vs[e] = Vb[(k0 + e / ATT_DV) * vst + e % ATT_DV];
        barrier(CLK_LOCAL_MEM_FENCE);
#define KROW(j) (Ks + (j) * ATT_D)
#define VROW(j) (Vs + (j) * ATT_DV)
#else
#define KROW(j) (Kb + (k0 + (j)) * kst)
#define VROW(j) (Vb + (k0 + (j)) * vst)
#endif
        float s[ATT_QB][ATT_KB];
        for (int j = 0; j < ATT_KB; ++j) {
            if (j < kn) {
                VT kv[NQV];
                for (int d = 0; d < NQV; ++d) kv[d] = VLOAD(d, KROW(j));
                for (int i = 0; i < ATT_QB; ++i) {
                    VT t = q[i][0] * kv[0];
                    for (int d = 1; d < NQV; ++d) t = fma(q[i][d], kv[d], t);
                    float sc = HSUM(t);
                    if (bias_b > 0) sc += Bb[min(q0 + i, Tq - 1) * Tk + k0 + j];
                    if (causal && k0 + j > q0 + i + Tk - Tq) sc = -INFINITY;
                    s[i][j] = sc;
                }
            } else {
                for (int i = 0; i < ATT_QB; ++i) s[i][j] = -INFINITY;
            }
        }
        for (int i = 0; i < ATT_QB; ++i) {
            float mb = m[i];
            for (int j = 0; j < ATT_KB; ++j) mb = fmax(mb, s[i][j]);
            if (mb == -INFINITY) continue; /* everything so far masked */
            float corr = exp(m[i] - mb);
            m[i] = mb;
            l[i] *= corr;
            for (int d = 0; d < NOV; ++d) acc[i][d] *= corr;
            for (int j = 0; j < ATT_KB; ++j) s[i][j] = exp(s[i][j] - mb);
        }
        for (int j = 0; j < kn; ++j) {
            VT vv[NOV];
            for (int d = 0; d < NOV; ++d) vv[d] = VLOAD(d, VROW(j));
            for (int i = 0; i < ATT_QB; ++i) {
                if (m[i] == -INFINITY) continue;
                float p = s[i][j];
                l[i] += p;
                for (int d = 0; d < NOV; ++d) acc[i][d] = fma((VT)(p), vv[d], acc[i][d]);
            }
        }
#undef KROW
#undef VROW
    }
    for (int i = 0; i < ATT_QB; ++i) {
        int qi = q0 + i;
        if (qi >= Tq) break;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        global float* orow = O + ooff + b * osb + h * osh + qi * ost;
        for (int d = 0; d < NOV; ++d) {
            VSTORE(acc[i][d] * inv, d, orow);
        }
    }
}
