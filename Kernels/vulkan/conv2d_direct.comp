#version 450
#include "common.glsl"
#include "erf.glsl"
#include "unary_ops.glsl"
/* Twin of conv2d_direct (Kernels/conv.cl): direct convolution as an implicit GEMM, bias and
 * activation (act >= 0) fused, NCHW, groups = 1:
 *   y[n, co, oy, ox] = bias[co] + sum over k = (c, ky, kx) of w[co, k] * x[n, c, iy, ix]
 * with iy = oy*sh - ph + ky, ix = ox*sw - pw + kx (0 outside the image). A work group computes
 * a CONV_TSM x CONV_TSN tile of (output channels, output pixels over the batch), stepping
 * through K = C*kh*kw in slices of CONV_TSK loaded into shared memory (the input slice's
 * addresses computed on the fly from a table of the tile's pixels and a double-buffered table
 * of each slice's taps); each item accumulates CONV_WPTM x CONV_WPTN outputs. Launched 2-D:
 * work-group (CONV_TSN / CONV_WPTN, CONV_TSM / CONV_WPTM), groups (tiles of pixels, tiles of
 * channels). Differences: only the OpenCL kernel's first form (items along the pixels, loads
 * spread over the items; the Vulkan backend takes the GPU set's tile under the CPU set too):
 * a tile of one item per row of pixels runs here as the same scalar sums in the same order,
 * its loads pixel by pixel; the 2-D shared arrays are flattened (same layout); the tap-table
 * helper writes the shared tables directly (GLSL passes no shared arrays); items of groups past
 * the pixels or channels only skip their stores (every item reaches every barrier). */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float w[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float bias[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float y[]; };

layout(push_constant) uniform PC {
    int xoff;
    int woff;
    int boff;
    int hasBias;
    int yoff;
    int batch;
    int C;
    int H;
    int W;
    int kh;
    int kw;
    int sh;
    int sw;
    int ph;
    int pw;
    int oh;
    int ow;
    int Cout;
    int act;
} pc;

const int RTSM = CONV_TSM / CONV_WPTM;
const int RTSN = CONV_TSN / CONV_WPTN;
const int THREADS = RTSM * RTSN;
const int WSTRIDE = CONV_TSM + 1;
const int NO_ROW = -(1 << 29);

shared float Ws[CONV_TSK * (CONV_TSM + 1)];   /* Ws[kk][mm] at kk * WSTRIDE + mm */
shared float Xs[CONV_TSK * CONV_TSN];         /* Xs[kk][nn] at kk * CONV_TSN + nn */
shared int pbase[CONV_TSN];
shared int py[CONV_TSN];
shared int px[CONV_TSN];
shared int ybase[CONV_TSN];
shared int toff[2 * CONV_TSK];                /* toff[slot][kk] at slot * CONV_TSK + kk */
shared int ty[2 * CONV_TSK];
shared int tx[2 * CONV_TSK];

void conv_taps(int slot, int k0, int K, int khw, int plane, int tid) {
    for (int kk = tid; kk < CONV_TSK; kk += THREADS) {
        int gk = k0 + kk;
        int c = gk / khw, r = gk - c * khw, ky = r / pc.kw, kx = r - ky * pc.kw;
        toff[slot * CONV_TSK + kk] = gk < K ? c * plane + ky * pc.W + kx : 0;
        ty[slot * CONV_TSK + kk] = gk < K ? ky : NO_ROW;
        tx[slot * CONV_TSK + kk] = kx;
    }
}

void main() {
    int tn = int(gl_LocalInvocationID.x), tm = int(gl_LocalInvocationID.y);
    int n0 = int(gl_WorkGroupID.x) * CONV_TSN, m0 = int(gl_WorkGroupID.y) * CONV_TSM;
    int tid = tm * RTSN + tn;
    int H = pc.H, W = pc.W, Cout = pc.Cout;
    int khw = pc.kh * pc.kw, K = pc.C * khw, hw = pc.oh * pc.ow, P = pc.batch * hw, plane = H * W;

    for (int nn = tid; nn < CONV_TSN; nn += THREADS) {
        int p = n0 + nn;
        int img = p / hw, r = p - img * hw, oy = r / pc.ow, ox = r - oy * pc.ow;
        int iy0 = oy * pc.sh - pc.ph, ix0 = ox * pc.sw - pc.pw;
        pbase[nn] = p < P ? pc.xoff + img * pc.C * plane + iy0 * W + ix0 : 0;
        py[nn] = p < P ? iy0 : NO_ROW;
        px[nn] = ix0;
        ybase[nn] = p < P ? img * Cout * hw + r : -1;
    }
    conv_taps(0, 0, K, khw, plane, tid);
    memoryBarrierShared();
    barrier();

    float acc[CONV_WPTM * CONV_WPTN];
    for (int i = 0; i < CONV_WPTM * CONV_WPTN; ++i) acc[i] = 0.0;
    int slot = 0;
    for (int k0 = 0; k0 < K; k0 += CONV_TSK) {
        for (int e = tid; e < CONV_TSK * CONV_TSM; e += THREADS) {
            int mm = e / CONV_TSK, kk = e - mm * CONV_TSK;
            int gm = m0 + mm, gk = k0 + kk;
            Ws[kk * WSTRIDE + mm] = (gm < Cout && gk < K) ? w[pc.woff + gm * K + gk] : 0.0;
        }
        for (int e = tid; e < CONV_TSK * CONV_TSN; e += THREADS) {
            int kk = e / CONV_TSN, nn = e - kk * CONV_TSN;
            int t = slot * CONV_TSK + kk;
            int iy = py[nn] + ty[t], ix = px[nn] + tx[t];
            float v = 0.0;
            if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = x[pbase[nn] + toff[t]];
            Xs[kk * CONV_TSN + nn] = v;
        }
        if (k0 + CONV_TSK < K) conv_taps(1 - slot, k0 + CONV_TSK, K, khw, plane, tid);
        memoryBarrierShared();
        barrier();
        for (int kk = 0; kk < CONV_TSK; ++kk) {
            float breg[CONV_WPTN];
            for (int j = 0; j < CONV_WPTN; ++j) breg[j] = Xs[kk * CONV_TSN + tn + j * RTSN];
            for (int i = 0; i < CONV_WPTM; ++i) {
                float a = Ws[kk * WSTRIDE + tm + i * RTSM];
                for (int j = 0; j < CONV_WPTN; ++j)
                    acc[i * CONV_WPTN + j] = fma(a, breg[j], acc[i * CONV_WPTN + j]);
            }
        }
        memoryBarrierShared();
        barrier();
        slot = 1 - slot;
    }

    for (int i = 0; i < CONV_WPTM; ++i) {
        int m = m0 + tm + i * RTSM;
        if (m >= Cout) continue;
        float b = pc.hasBias != 0 ? bias[pc.boff + m] : 0.0;
        int ym = pc.yoff + m * hw;
        for (int j = 0; j < CONV_WPTN; ++j) {
            int o = ybase[tn + j * RTSN];
            if (o >= 0) y[ym + o] = epilogue_act(pc.act, acc[i * CONV_WPTN + j] + b);
        }
    }
}
