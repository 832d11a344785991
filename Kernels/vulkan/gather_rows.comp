#version 450
#include "common.glsl"
/* Twin of elementwise.cl gather_rows: out[r, :] = table[index[r], :] (indices float-encoded,
 * converted with truncation like OpenCL's (int) cast). The buffer `out` is named out_ (GLSL
 * keyword); otherwise no differences. */

layout(std430, set = 0, binding = 0) buffer B0 { float table[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float index[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float out_[]; };

layout(push_constant) uniform PC {
    int toff;
    int ioff;
    int ooff;
    int rows;
    int dim;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.rows * pc.dim) return;
    int r = i / pc.dim, j = i - r * pc.dim;
    int src = int(index[pc.ioff + r]);
    out_[pc.ooff + i] = table[pc.toff + src * pc.dim + j];
}
