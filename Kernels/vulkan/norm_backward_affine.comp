#version 450
#include "common.glsl"
/* Twin of norm_backward_affine (Kernels/softmax.cl): dgamma / dbeta per channel c, the sums
 * over n and spatial of dy * xhat and dy, one item per channel (1-D launch of channels items).
 * Layer norm: n = rows, channels = cols, spatial = 1, groups = 1 with stat per row.
 * No differences (index from gid0()). */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float mean[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float rstd[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float dy[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float dgamma[]; };
layout(std430, set = 0, binding = 5) buffer B5 { float dbeta[]; };

layout(push_constant) uniform PC {
    int xoff;
    int moff;
    int roff;
    int dyoff;
    int dgoff;
    int want_g;
    int dboff;
    int want_b;
    int n;
    int channels;
    int spatial;
    int groups;
} pc;

void main() {
    int c = gid0();
    if (c >= pc.channels) return;
    int cpg = pc.channels / pc.groups;
    float sg = 0.0, sb = 0.0;
    for (int b = 0; b < pc.n; ++b) {
        int st = b * pc.groups + c / cpg;
        float mu = mean[pc.moff + st], rs = rstd[pc.roff + st];
        int base = (b * pc.channels + c) * pc.spatial;
        for (int s = 0; s < pc.spatial; ++s) {
            float g = dy[pc.dyoff + base + s];
            sg += g * (x[pc.xoff + base + s] - mu) * rs;
            sb += g;
        }
    }
    if (pc.want_g != 0) dgamma[pc.dgoff + c] = sg;
    if (pc.want_b != 0) dbeta[pc.dboff + c] = sb;
}
