#version 450
#include "common.glsl"
#include "erf.glsl"
#include "unary_ops.glsl"
/* Twin of elementwise.cl unary_f32: y[yoff + i] = unary_f(op, x[xoff + i], p0, p1).
 * Differences (see unary_ops.glsl): erf is erf_f (erf.glsl), tanh is tanh_f, fmin/fmax are
 * min/max. */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float y[]; };

layout(push_constant) uniform PC {
    int xoff;
    int yoff;
    int n;
    int op;
    float p0;
    float p1;
} pc;

void main() {
    int i = gid0();
    if (i < pc.n) y[pc.yoff + i] = unary_f(pc.op, x[pc.xoff + i], pc.p0, pc.p1);
}
