#version 450
#include "common.glsl"
/* Twin of elementwise.cl adamw_f32: one fused AdamW step (decoupled weight decay);
 * bc1 = 1 - beta1^t, bc2 = 1 - beta2^t. No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float p[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float g[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float m[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float v[]; };

layout(push_constant) uniform PC {
    int poff;
    int goff;
    int moff;
    int voff;
    int n;
    float lr;
    float beta1;
    float beta2;
    float eps;
    float wd;
    float bc1;
    float bc2;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.n) return;
    float gi = g[pc.goff + i];
    float mi = pc.beta1 * m[pc.moff + i] + (1.0 - pc.beta1) * gi;
    float vi = pc.beta2 * v[pc.voff + i] + (1.0 - pc.beta2) * gi * gi;
    m[pc.moff + i] = mi;
    v[pc.voff + i] = vi;
    float pv = p[pc.poff + i];
    float mh = mi / pc.bc1, vh = vi / pc.bc2;
    p[pc.poff + i] = pv - pc.lr * (pc.wd * pv + mh / (sqrt(vh) + pc.eps));
}
