#version 450
#include "common.glsl"
/* Twin of layer_norm_affine (Kernels/softmax.cl): y[r, j] = y[r, j] * gamma[j] + beta[j]
 * (each factor only when present), one item per element (1-D launch of rows * cols items).
 * No differences (index from gid0()). */

layout(std430, set = 0, binding = 0) buffer B0 { float y[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float gamma[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float beta[]; };

layout(push_constant) uniform PC {
    int yoff;
    int goff;
    int has_gamma;
    int boff;
    int has_beta;
    int rows;
    int cols;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.rows * pc.cols) return;
    int j = i % pc.cols;
    float v = y[pc.yoff + i];
    if (pc.has_gamma != 0) v *= gamma[pc.goff + j];
    if (pc.has_beta != 0) v += beta[pc.boff + j];
    y[pc.yoff + i] = v;
}
