#version 450
#include "common.glsl"
/* Twin of elementwise.cl reduce_sum: out[ooff + o * inner + j] = sum over r (in order) of
 * x[xoff + (o * reduce + r) * inner + j] for [outer, reduce, inner]. The buffer `out` is
 * named out_ (GLSL keyword); otherwise no differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float out_[]; };

layout(push_constant) uniform PC {
    int xoff;
    int ooff;
    int outer;
    int reduce;
    int inner;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.outer * pc.inner) return;
    int o = i / pc.inner, j = i - o * pc.inner;
    int base = pc.xoff + (o * pc.reduce) * pc.inner + j;
    float s = 0.0;
    for (int r = 0; r < pc.reduce; ++r) s += x[base + r * pc.inner];
    out_[pc.ooff + i] = s;
}
