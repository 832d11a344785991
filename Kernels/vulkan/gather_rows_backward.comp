#version 450
#include "common.glsl"
/* Twin of elementwise.cl gather_rows_backward: dtable[v, :] = sum (in list order) of the dy
 * rows listed for v in the inverse index (CSR: start[v] .. start[v + 1] into list, all
 * float-encoded). No differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float dy[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float start[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float list[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float dtable[]; };

layout(push_constant) uniform PC {
    int dyoff;
    int soff;
    int loff;
    int toff;
    int vocab;
    int dim;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.vocab * pc.dim) return;
    int v = i / pc.dim, j = i - v * pc.dim;
    int e0 = int(start[pc.soff + v]), e1 = int(start[pc.soff + v + 1]);
    float s = 0.0;
    for (int e = e0; e < e1; ++e) s += dy[pc.dyoff + int(list[pc.loff + e]) * pc.dim + j];
    dtable[pc.toff + i] = s;
}
