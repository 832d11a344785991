#version 450
#include "common.glsl"
/* Twin of resize2d_backward (Kernels/conv.cl), gather form of the resize adjoint: 1-D launch
 * of planes * ih * iw items, each input pixel visiting the outputs that can read it (a
 * window found from the inverse mapping, with a margin).
 * Differences: resize_taps returns through out parameters instead of pointers, its `in` /
 * `out` parameters are named n_in / n_out (GLSL keywords), fmax is max. */

layout(std430, set = 0, binding = 0) buffer B0 { float dy[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float dx[]; };

layout(push_constant) uniform PC {
    int dyoff;
    int dxoff;
    int planes;
    int ih;
    int iw;
    int oh;
    int ow;
    int mode;
} pc;

/* Source taps of output coordinate o (mode 0 nearest, 1 bilinear half-pixel). */
void resize_taps(int mode, int o, int n_in, int n_out, out int i0, out int i1, out float w0, out float w1) {
    float scale = float(n_in) / float(n_out);
    if (mode == 0) {
        i0 = min(int(floor(float(o) * scale)), n_in - 1);
        i1 = i0; w0 = 1.0; w1 = 0.0;
    } else {
        float src = max((float(o) + 0.5) * scale - 0.5, 0.0);
        i0 = min(int(floor(src)), n_in - 1);
        i1 = min(i0 + 1, n_in - 1);
        w1 = src - float(i0);
        w0 = 1.0 - w1;
    }
}

/* Weight with which output coordinate o reads input coordinate i (0 if it does not). */
float resize_weight(int mode, int o, int i, int n_in, int n_out) {
    int i0, i1; float w0, w1;
    resize_taps(mode, o, n_in, n_out, i0, i1, w0, w1);
    return (i0 == i ? w0 : 0.0) + (i1 == i ? w1 : 0.0);
}

void main() {
    int i = gid0();
    if (i >= pc.planes * pc.ih * pc.iw) return;
    int ix = i % pc.iw, iy = (i / pc.iw) % pc.ih, p = i / (pc.iw * pc.ih);
    float sy = float(pc.oh) / float(pc.ih), sx = float(pc.ow) / float(pc.iw);
    int oy0 = max(int(floor((float(iy) - 1.0) * sy)) - 2, 0);
    int oy1 = min(int(ceil((float(iy) + 2.0) * sy)) + 2, pc.oh);
    int ox0 = max(int(floor((float(ix) - 1.0) * sx)) - 2, 0);
    int ox1 = min(int(ceil((float(ix) + 2.0) * sx)) + 2, pc.ow);
    int gp = pc.dyoff + p * pc.oh * pc.ow;
    float s = 0.0;
    for (int oy = oy0; oy < oy1; ++oy) {
        float wy = resize_weight(pc.mode, oy, iy, pc.ih, pc.oh);
        if (wy == 0.0) continue;
        for (int ox = ox0; ox < ox1; ++ox) {
            float wx = resize_weight(pc.mode, ox, ix, pc.iw, pc.ow);
            if (wx != 0.0) s += dy[gp + oy * pc.ow + ox] * wy * wx;
        }
    }
    dx[pc.dxoff + i] = s;
}
