#version 450
#include "common.glsl"
/* Twin of resize2d (Kernels/conv.cl): nearest (mode 0) or bilinear half-pixel (mode 1)
 * resize of planes [ih, iw] -> [oh, ow]; 1-D launch of planes * oh * ow items.
 * Differences: resize_taps returns through out parameters instead of pointers, its `in` /
 * `out` parameters are named n_in / n_out (GLSL keywords), fmax is max. */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float y[]; };

layout(push_constant) uniform PC {
    int xoff;
    int yoff;
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

void main() {
    int i = gid0();
    if (i >= pc.planes * pc.oh * pc.ow) return;
    int ox = i % pc.ow, oy = (i / pc.ow) % pc.oh, p = i / (pc.ow * pc.oh);
    int y0, y1, x0, x1; float wy0, wy1, wx0, wx1;
    resize_taps(pc.mode, oy, pc.ih, pc.oh, y0, y1, wy0, wy1);
    resize_taps(pc.mode, ox, pc.iw, pc.ow, x0, x1, wx0, wx1);
    int xp = pc.xoff + p * pc.ih * pc.iw;
    float top = x[xp + y0 * pc.iw + x0] * wx0 + x[xp + y0 * pc.iw + x1] * wx1;
    float bot = x[xp + y1 * pc.iw + x0] * wx0 + x[xp + y1 * pc.iw + x1] * wx1;
    y[pc.yoff + i] = top * wy0 + bot * wy1;
}
