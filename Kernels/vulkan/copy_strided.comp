#version 450
#include "common.glsl"
/* Twin of elementwise.cl copy_strided: dst[strided] = src[strided] over shape (rank <= 6,
 * padded with leading 1s; int8 arguments as int[8]). No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float src[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float dst[]; };

layout(push_constant) uniform PC {
    int soff;
    int sstr[8];
    int doff;
    int dstr[8];
    int shape[8];
    int n;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.n) return;
    dst[pc.doff + strided_offset(i, pc.shape, pc.dstr)] = src[pc.soff + strided_offset(i, pc.shape, pc.sstr)];
}
