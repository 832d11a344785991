#version 450
#include "common.glsl"
/* Twin of elementwise.cl binary_strided: out[ooff + i] = a[strided] op b[strided] with
 * broadcast strides over shape (int8 arguments as int[8]); op: 0 add, 1 sub, 2 mul, other
 * div. The buffer `out` is named out_ (GLSL keyword); otherwise no differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float a[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float b[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float out_[]; };

layout(push_constant) uniform PC {
    int aoff;
    int astr[8];
    int boff;
    int bstr[8];
    int ooff;
    int shape[8];
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
    if (i >= pc.n) return;
    out_[pc.ooff + i] = binary_f(pc.op, a[pc.aoff + strided_offset(i, pc.shape, pc.astr)],
                                 b[pc.boff + strided_offset(i, pc.shape, pc.bstr)]);
}
