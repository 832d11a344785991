#version 450
#include "common.glsl"
/* Twin of im2col (Kernels/conv.cl), NCHW, groups = 1:
 * col[(c*kh + ky)*kw + kx, n*oh*ow + oy*ow + ox] = x[n, c, oy*sh - ph + ky, ox*sw - pw + kx]
 * or 0 outside the image. 1-D launch of C*kh*kw * batch * oh items, each writing the ow
 * outputs of one (col row, image, output row) in a loop. No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float col[]; };

layout(push_constant) uniform PC {
    int xoff;
    int coff;
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
    int rows = pc.C * pc.kh * pc.kw;
    if (i >= rows * pc.batch * pc.oh) return;
    int oy = i % pc.oh, n = (i / pc.oh) % pc.batch, row = i / (pc.oh * pc.batch);
    int c = row / (pc.kh * pc.kw), ky = (row / pc.kw) % pc.kh, kx = row % pc.kw;
    int iy = oy * pc.sh - pc.ph + ky;
    int dst = pc.coff + row * (pc.batch * pc.oh * pc.ow) + n * pc.oh * pc.ow + oy * pc.ow;
    if (iy < 0 || iy >= pc.H) {
        for (int ox = 0; ox < pc.ow; ++ox) col[dst + ox] = 0.0;
        return;
    }
    int src = pc.xoff + ((n * pc.C + c) * pc.H + iy) * pc.W;
    for (int ox = 0; ox < pc.ow; ++ox) {
        int ix = ox * pc.sw - pc.pw + kx;
        col[dst + ox] = (ix >= 0 && ix < pc.W) ? x[src + ix] : 0.0;
    }
}
