#version 450
#include "common.glsl"
/* Twin of elementwise.cl binary_1d: out[ooff + i] = a[aoff + i * astride] op
 * b[boff + i * bstride]; op: 0 add, 1 sub, 2 mul, other div. The buffer `out` is named
 * out_ (GLSL keyword); otherwise no differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float a[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float b[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float out_[]; };

layout(push_constant) uniform PC {
    int aoff;
    int astride;
    int boff;
    int bstride;
    int ooff;
    int n;
    int op;
} pc;

float binary_f(int op, float xv, float yv) {
    switch (op) {
    case 0: return xv + yv;
    case 1: return xv - yv;
    case 2: return xv * yv;
    default: return xv / yv;
    }
}

void main() {
    int i = gid0();
    if (i < pc.n) out_[pc.ooff + i] = binary_f(pc.op, a[pc.aoff + i * pc.astride], b[pc.boff + i * pc.bstride]);
}
