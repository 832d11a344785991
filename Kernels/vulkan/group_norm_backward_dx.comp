#version 450
#include "common.glsl"
/* Twin of group_norm_backward_dx (Kernels/softmax.cl): dx of a group norm (layer norm:
 * per_col = 1 reads gamma per column instead of per channel), one work-group of ROW_WG items
 * per group (a 1-D launch of count * groups * ROW_WG items).
 * Differences: the group index comes from group0(). The kernel has no count argument, so a
 * folded launch with spare work-groups cannot be bounded exactly: as a safety net a group
 * returns (uniformly) when its mean slot lies past the end of the bound mean buffer (the
 * host must not launch groups past count * groups inside a larger mean buffer). */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float gamma[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float mean[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float rstd[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float dy[]; };
layout(std430, set = 0, binding = 5) buffer B5 { float dx[]; };

layout(push_constant) uniform PC {
    int xoff;
    int goff;
    int has_gamma;
    int per_col;
    int moff;
    int roff;
    int dyoff;
    int dxoff;
    int groups;
    int cpg;
    int spatial;
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

float gamma_at(int j, int c0) {
    if (pc.has_gamma == 0) return 1.0;
    return gamma[pc.goff + (pc.per_col != 0 ? j : c0 + j / pc.spatial)];
}

void main() {
    int grp = group0(), l = int(gl_LocalInvocationID.x);
    if (pc.moff + grp >= mean.length()) return; /* spare group of a folded launch (uniform) */
    int len = pc.cpg * pc.spatial, c0 = (grp % pc.groups) * pc.cpg;
    int xg = pc.xoff + grp * len;
    int gg = pc.dyoff + grp * len;
    int dg = pc.dxoff + grp * len;
    float mu = mean[pc.moff + grp], rs = rstd[pc.roff + grp];
    float sg = 0.0, sgx = 0.0;
    for (int j = l; j < len; j += ROW_WG) {
        float gh = dy[gg + j] * gamma_at(j, c0);
        sg += gh;
        sgx += gh * (x[xg + j] - mu) * rs;
    }
    sg = wg_sum(sg);
    sgx = wg_sum(sgx);
    float n = float(len);
    for (int j = l; j < len; j += ROW_WG) {
        float xh = (x[xg + j] - mu) * rs;
        dx[dg + j] = rs * (dy[gg + j] * gamma_at(j, c0) - sg / n - xh * sgx / n);
    }
}
