#version 450
#include "common.glsl"
/* Twin of group_norm (Kernels/softmax.cl): normalisation over contiguous groups
 * [count, cpg, spatial] with (mean, rstd) per group and an optional affine per channel
 * (channel = (group % groups) * cpg + c), then SiLU when silu != 0; one work-group of ROW_WG items per group (a 1-D
 * launch of count * groups * ROW_WG items).
 * Differences: the group index comes from group0(). The kernel has no count argument, so a
 * folded launch with spare work-groups cannot be bounded exactly: as a safety net a group
 * returns (uniformly) when its mean slot lies past the end of the bound mean buffer. The
 * host must therefore not launch groups past count * groups inside a larger mean buffer
 * (an unfolded launch never does). rsqrt -> inversesqrt. */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float gamma[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float beta[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float y[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float mean[]; };
layout(std430, set = 0, binding = 5) buffer B5 { float rstd[]; };

layout(push_constant) uniform PC {
    int xoff;
    int goff;
    int boff;
    int has_affine;
    int yoff;
    int moff;
    int roff;
    int groups;
    int cpg;
    int spatial;
    float eps;
    int silu;
} pc;

shared float red[ROW_WG];

/* Tree sum over the work-group (ROW_WG a power of two), as wg_sum. */
float wg_sum(float v) {
    int l = int(gl_LocalInvocationID.x);
    red[l] = v;
    memoryBarrierShared();
    barrier();
    for (int s = ROW_WG / 2; s > 0; s >>= 1) {
        if (l < s) red[l] += red[l + s];
        memoryBarrierShared();
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main() {
    int grp = group0(), l = int(gl_LocalInvocationID.x);
    if (pc.moff + grp >= mean.length()) return; /* spare group of a folded launch (uniform) */
    int spatial = pc.spatial;
    int len = pc.cpg * spatial;
    int xg = pc.xoff + grp * len;
    int yg = pc.yoff + grp * len;
    float s = 0.0;
    for (int j = l; j < len; j += ROW_WG) s += x[xg + j];
    float mu = wg_sum(s) / float(len);
    float v = 0.0;
    for (int j = l; j < len; j += ROW_WG) { float d = x[xg + j] - mu; v += d * d; }
    float rs = inversesqrt(wg_sum(v) / float(len) + pc.eps);
    if (l == 0) { mean[pc.moff + grp] = mu; rstd[pc.roff + grp] = rs; }
    int c0 = (grp % pc.groups) * pc.cpg;
    for (int j = l; j < len; j += ROW_WG) {
        float h = (x[xg + j] - mu) * rs;
        if (pc.has_affine != 0) { int c = c0 + j / spatial; h = h * gamma[pc.goff + c] + beta[pc.boff + c]; }
        if (pc.silu != 0) h = h / (1.0 + exp(-h));
        y[yg + j] = h;
    }
}
