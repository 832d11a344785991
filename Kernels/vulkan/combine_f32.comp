#version 450
#include "common.glsl"
/* Twin of elementwise.cl combine_f32: out[i] = c0 x0[i] + c1 x1[i] + c2 x2[i] + c3 x3[i] over
 * the first `terms` operands, in the same order. No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float x0[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float x1[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float x2[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float x3[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float outv[]; };

layout(push_constant) uniform PC {
    int off0;
    int off1;
    int off2;
    int off3;
    int ooff;
    int n;
    int terms;
    float c0;
    float c1;
    float c2;
    float c3;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.n) return;
    float v = pc.c0 * x0[pc.off0 + i];
    if (pc.terms > 1) v += pc.c1 * x1[pc.off1 + i];
    if (pc.terms > 2) v += pc.c2 * x2[pc.off2 + i];
    if (pc.terms > 3) v += pc.c3 * x3[pc.off3 + i];
    outv[pc.ooff + i] = v;
}
