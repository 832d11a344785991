#version 450
#include "common.glsl"
#include "philox.glsl"
/* Twin of noisear_sample_patch (Kernels/random.cl): one patch (gy, gx) of a NoiseAR sample
 * of a [B, C, S, S] latent, one item per token element (1-D launch of batch * C * P * P items):
 *   latent[b, c, y, x] = token[b, j] = mu[b, j] + eps * tau * exp(0.5 * clamp(logvar[b, j], lo, hi))
 * with eps = eps_in[b, c, y, x] when use_eps, else normal number c*S*S + y*S + x of stream
 * seed + b (bit-identical to the OpenCL draw, see philox.glsl; seed + b via uaddCarry).
 * Differences: clamp is written min(max(v, lo), hi) (OpenCL's definition); the final
 * expression is `precise` (random.cl has FP_CONTRACT OFF), but Vulkan's exp is not OpenCL's,
 * so v may differ from the OpenCL result in the last bits. Index from gid0(). */

layout(std430, set = 0, binding = 0) buffer B0 { float mu[]; };
layout(std430, set = 0, binding = 1) buffer B1 { float lv[]; };
layout(std430, set = 0, binding = 2) buffer B2 { float eps_in[]; };
layout(std430, set = 0, binding = 3) buffer B3 { float latent[]; };
layout(std430, set = 0, binding = 4) buffer B4 { float token[]; };

layout(push_constant) uniform PC {
    int mu_off;
    int lv_off;
    int eps_off;
    int use_eps;
    int lat_off;
    int tok_off;
    int batch;
    int channels;
    int size;
    int patch_; /* `patch` is a GLSL keyword */
    int gy;
    int gx;
    uint seed_lo;
    uint seed_hi;
    float tau;
    float lo;
    float hi;
} pc;

void main() {
    int i = gid0();
    int P = pc.patch_, size = pc.size;
    int n = pc.channels * P * P;
    if (i >= pc.batch * n) return;
    int b = i / n, j = i - b * n;
    int c = j / (P * P), r = j - c * P * P;
    int py = r / P, px = r - py * P;
    int y = pc.gy * P + py, x = pc.gx * P + px;
    int at = (c * size + y) * size + x;
    int li = b * pc.channels * size * size + at;
    float e;
    if (pc.use_eps != 0) {
        e = eps_in[pc.eps_off + li];
    } else {
        uint carry;
        uint s_lo = uaddCarry(pc.seed_lo, uint(b), carry);
        uint s_hi = pc.seed_hi + carry;
        e = philox_normal_at(uint(at), 0u, s_lo, s_hi);
    }
    precise float v = mu[pc.mu_off + i] + e * pc.tau * exp(0.5 * min(max(lv[pc.lv_off + i], pc.lo), pc.hi));
    token[pc.tok_off + i] = v;
    latent[pc.lat_off + li] = v;
}
