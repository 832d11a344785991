#version 450
#include "common.glsl"
#include "philox.glsl"
/* Twin of philox_randn (Kernels/random.cl): dst[doff + i] = normal number (offset + i) of
 * stream seed, one item per element (1-D launch of n items). Bit-identical to the OpenCL
 * kernel (see philox.glsl); the 64-bit offset + i is formed with uaddCarry. Index from gid0(). */

layout(std430, set = 0, binding = 0) buffer B0 { float dst[]; };

layout(push_constant) uniform PC {
    int doff;
    int n;
    uint seed_lo;
    uint seed_hi;
    uint off_lo;
    uint off_hi;
} pc;

void main() {
    int i = gid0();
    if (i >= pc.n) return;
    uint carry;
    uint e_lo = uaddCarry(pc.off_lo, uint(i), carry);
    uint e_hi = pc.off_hi + carry;
    dst[pc.doff + i] = philox_normal_at(e_lo, e_hi, pc.seed_lo, pc.seed_hi);
}
