#version 450
#include "common.glsl"
/* Twin of attention_fwd (Kernels/attention.cl): fused multi-head attention with an online
 * softmax, O = softmax(scale * Q K^T + bias + causal) V, for a 3-D launch
 * (ceil(Tq / (ATT_QB * ATT_WG)) * ATT_WG, heads, batch) with work-groups (ATT_WG, 1, 1).
 * Specialization constants: ATT_D / ATT_DV (13 / 14) the head dims, ATT_QB queries per item,
 * ATT_KB keys per block, ATT_WG items per group, ATT_LOCAL 1 to stage K/V blocks in shared
 * memory (the shared arrays shrink to one float when ATT_LOCAL is 0, so a launch that falls
 * back to ATT_LOCAL 0 because the blocks do not fit needs no shared memory), ATT_VW (15) the
 * vector width of the OpenCL build.
 * Differences: scalar code instead of VT vectors; the q.k dot product keeps ATT_VW partial
 * sums combined by the same pairwise tree as HSUM, so it sums in the OpenCL order (when
 * ATT_VW does not divide both head dims it is taken as 1); K and V rows are read from shared or
 * global memory per query instead of through private copies (same values). */

layout(std430, set = 0, binding = 0) buffer B0 { float Q[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float K[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float V[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float bias[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float O[]; };

layout(push_constant) uniform PC {
    int qoff;
    int qsb;
    int qsh;
    int qst;
    int koff;
    int ksb;
    int ksh;
    int kst;
    int voff;
    int vsb;
    int vsh;
    int vst;
    int boff;
    int bias_b;
    int bias_h;
    int ooff;
    int osb;
    int osh;
    int ost;
    int Tq;
    int Tk;
    float scale;
    int causal;
} pc;

/* K / V blocks staged by the group (one float when ATT_LOCAL is 0). */
shared float Ks[ATT_KB * ATT_D * ATT_LOCAL + (1 - ATT_LOCAL)];
shared float Vs[ATT_KB * ATT_DV * ATT_LOCAL + (1 - ATT_LOCAL)];

void main() {
    const float NEG_INF = uintBitsToFloat(0xff800000u);
    /* The vector width of the OpenCL dot products (1 when it does not divide both dims). */
    int vw = 1;
    if (ATT_VW > 1 && ATT_D % ATT_VW == 0 && ATT_DV % ATT_VW == 0) vw = ATT_VW;
    int nqv = ATT_D / vw;
    int item = int(gl_GlobalInvocationID.x), h = int(gl_GlobalInvocationID.y),
        b = int(gl_GlobalInvocationID.z);
    int lid = int(gl_LocalInvocationID.x);
    int Tq = pc.Tq, Tk = pc.Tk;
    int q0 = item * ATT_QB;
    int kb = pc.koff + b * pc.ksb + h * pc.ksh;
    int vb = pc.voff + b * pc.vsb + h * pc.vsh;
    int bb = pc.bias_b > 0
        ? pc.boff + ((b % pc.bias_b) * pc.bias_h + (h % pc.bias_h)) * Tq * Tk : 0;
    float q[ATT_QB * ATT_D];
    float acc[ATT_QB * ATT_DV];
    float m[ATT_QB], l[ATT_QB];
    float s[ATT_QB * ATT_KB];
    float t[ATT_VW];
    for (int i = 0; i < ATT_QB; ++i) {
        int qi = min(q0 + i, Tq - 1);
        int qr = pc.qoff + b * pc.qsb + h * pc.qsh + qi * pc.qst;
        for (int d = 0; d < ATT_D; ++d) q[i * ATT_D + d] = Q[qr + d] * pc.scale;
        for (int d = 0; d < ATT_DV; ++d) acc[i * ATT_DV + d] = 0.0;
        m[i] = NEG_INF;
        l[i] = 0.0;
    }
    /* Keys this group needs (uniform across the group for barriers). */
    int kend = Tk;
    if (pc.causal != 0) {
        int last_q = min(int(gl_WorkGroupID.x + 1u) * ATT_WG * ATT_QB, Tq) - 1;
        kend = min(Tk, last_q + Tk - Tq + 1);
    }
    for (int k0 = 0; k0 < kend; k0 += ATT_KB) {
        int kn = min(ATT_KB, kend - k0);
        if (ATT_LOCAL != 0) {
            barrier();
            for (int e = lid; e < kn * ATT_D; e += ATT_WG)
                Ks[e] = K[kb + (k0 + e / ATT_D) * pc.kst + e % ATT_D];
            for (int e = lid; e < kn * ATT_DV; e += ATT_WG)
                Vs[e] = V[vb + (k0 + e / ATT_DV) * pc.vst + e % ATT_DV];
            memoryBarrierShared();
            barrier();
        }
        for (int j = 0; j < ATT_KB; ++j) {
            if (j < kn) {
                int kr = kb + (k0 + j) * pc.kst;
                for (int i = 0; i < ATT_QB; ++i) {
                    /* VT t = q[0] * k[0]; t = fma(q[d], k[d], t); HSUM(t) */
                    for (int v = 0; v < vw; ++v) {
                        float kv = ATT_LOCAL != 0 ? Ks[j * ATT_D + v] : K[kr + v];
                        t[v] = q[i * ATT_D + v] * kv;
                    }
                    for (int d = 1; d < nqv; ++d) {
                        for (int v = 0; v < vw; ++v) {
                            int e = d * vw + v;
                            float kv = ATT_LOCAL != 0 ? Ks[j * ATT_D + e] : K[kr + e];
                            t[v] = fma(q[i * ATT_D + e], kv, t[v]);
                        }
                    }
                    for (int w = vw; w > 1; w >>= 1)
                        for (int v = 0; v < w / 2; ++v) t[v] = t[2 * v] + t[2 * v + 1];
                    float sc = t[0];
                    if (pc.bias_b > 0) sc += bias[bb + min(q0 + i, Tq - 1) * Tk + k0 + j];
                    if (pc.causal != 0 && k0 + j > q0 + i + Tk - Tq) sc = NEG_INF;
                    s[i * ATT_KB + j] = sc;
                }
            } else {
                for (int i = 0; i < ATT_QB; ++i) s[i * ATT_KB + j] = NEG_INF;
            }
        }
        for (int i = 0; i < ATT_QB; ++i) {
            float mb = m[i];
            for (int j = 0; j < ATT_KB; ++j) mb = max(mb, s[i * ATT_KB + j]);
            if (mb == NEG_INF) continue; /* everything so far masked */
            float corr = exp(m[i] - mb);
            m[i] = mb;
            l[i] *= corr;
            for (int d = 0; d < ATT_DV; ++d) acc[i * ATT_DV + d] *= corr;
            for (int j = 0; j < ATT_KB; ++j) s[i * ATT_KB + j] = exp(s[i * ATT_KB + j] - mb);
        }
        for (int j = 0; j < kn; ++j) {
            int vr = vb + (k0 + j) * pc.vst;
            for (int i = 0; i < ATT_QB; ++i) {
                if (m[i] == NEG_INF) continue;
                float p = s[i * ATT_KB + j];
                l[i] += p;
                for (int d = 0; d < ATT_DV; ++d) {
                    float vv = ATT_LOCAL != 0 ? Vs[j * ATT_DV + d] : V[vr + d];
                    acc[i * ATT_DV + d] = fma(p, vv, acc[i * ATT_DV + d]);
                }
            }
        }
    }
    for (int i = 0; i < ATT_QB; ++i) {
        int qi = q0 + i;
        if (qi >= Tq) break;
        float inv = l[i] > 0.0 ? 1.0 / l[i] : 0.0;
        int orow = pc.ooff + b * pc.osb + h * pc.osh + qi * pc.ost;
        for (int d = 0; d < ATT_DV; ++d) O[orow + d] = acc[i * ATT_DV + d] * inv;
    }
}
