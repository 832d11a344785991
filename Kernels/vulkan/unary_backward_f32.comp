#version 450
#include "common.glsl"
#include "erf.glsl"
#include "unary_ops.glsl"
/* Twin of elementwise.cl unary_backward_f32: dx[dxoff + i] = dy[dyoff + i] *
 * unary_df(op, x[xoff + i], p0, p1). Differences (see unary_ops.glsl): erf is erf_f
 * (erf.glsl), tanh is tanh_f. */

layout(std430, set = 0, binding = 0) buffer B0 { float x[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float dy[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float dx[]; };

layout(push_constant) uniform PC {
    int xoff;
    int dyoff;
    int dxoff;
    int n;
    int op;
    float p0;
    float p1;
} pc;

void main() {
    int i = gid0();
    if (i < pc.n) dx[pc.dxoff + i] = dy[pc.dyoff + i] * unary_df(pc.op, x[pc.xoff + i], pc.p0, pc.p1);
}
