#version 450
#include "common.glsl"
/* Twin of elementwise.cl copy_1d: dst[doff + i * dstride] = src[soff + i * sstride].
 * No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float src[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float dst[]; };

layout(push_constant) uniform PC {
    int soff;
    int sstride;
    int doff;
    int dstride;
    int n;
} pc;

void main() {
    int i = gid0();
    if (i < pc.n) dst[pc.doff + i * pc.dstride] = src[pc.soff + i * pc.sstride];
}
