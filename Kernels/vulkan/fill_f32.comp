#version 450
#include "common.glsl"
/* Twin of elementwise.cl fill_f32: dst[doff + i] = value for i < n. No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float dst[]; };

layout(push_constant) uniform PC {
    int doff;
    int n;
    float value;
} pc;

void main() {
    int i = gid0();
    if (i < pc.n) dst[pc.doff + i] = pc.value;
}
