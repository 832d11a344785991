#version 450
#include "common.glsl"
/* Twin of col2im (Kernels/conv.cl), gather form (no atomics): 1-D launch of batch * C * H
 * items, one per input row (image, channel, iy), each pixel summing (in the same ky, kx
 * order) the col entries that read it. No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float col[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float dx[]; };

layout(push_constant) uniform PC {
    int coff;
    int dxoff;
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
} pc;

void main() {
    int i = gid0();
    if (i >= pc.batch * pc.C * pc.H) return;
    int iy = i % pc.H, c = (i / pc.H) % pc.C, n = i / (pc.H * pc.C);
    int hw = pc.oh * pc.ow, cols = pc.batch * hw;
    int cb = pc.coff + n * hw;
    int drow = pc.dxoff + ((n * pc.C + c) * pc.H + iy) * pc.W;
    for (int ix = 0; ix < pc.W; ++ix) {
        float s = 0.0;
        for (int ky = 0; ky < pc.kh; ++ky) {
            int ty = iy + pc.ph - ky;
            if (ty < 0 || ty % pc.sh != 0) continue;
            int oy = ty / pc.sh;
            if (oy >= pc.oh) continue;
            for (int kx = 0; kx < pc.kw; ++kx) {
                int tx = ix + pc.pw - kx;
                if (tx < 0 || tx % pc.sw != 0) continue;
                int ox = tx / pc.sw;
                if (ox >= pc.ow) continue;
                s += col[cb + ((c * pc.kh + ky) * pc.kw + kx) * cols + oy * pc.ow + ox];
            }
        }
        dx[drow + ix] = s;
    }
}
