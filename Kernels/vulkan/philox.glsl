/* Philox4x32-10 standard normals shared by philox_randn.comp and noisear_sample_patch.comp
 * (included, not compiled on its own). GLSL twin of the helpers of Kernels/random.cl: the same
 * operations in the same order, so the same bits as the OpenCL and CPU (Philox.swift) paths.
 * Vulkan only guarantees correctly rounded +, -, * (and float <-> int conversions), so:
 * - every float intermediate is `precise` (SPIR-V NoContraction): no mul+add is fused or
 *   reassociated (random.cl has FP_CONTRACT OFF);
 * - random.cl's explicit fma is philox_fma, an exact emulation, because GLSL fma() may be
 *   evaluated unfused (Mesa's lavapipe does: it gave different normals);
 * - random.cl's sqrt is correctly rounded but Vulkan's need not be (it inherits
 *   1/inversesqrt's precision): philox_sqrt rounds it correctly;
 * - the 32x32->64 products use umulExtended.
 * The decimal literals round to the same floats as in C (checked). */
#ifndef NOISEAR_PHILOX_GLSL
#define NOISEAR_PHILOX_GLSL

/* a + b = s + e exactly (Knuth's TwoSum; no overflow). */
void philox_two_sum(float a, float b, out float s, out float e) {
    precise float x = a + b;
    precise float bb = x - a;
    precise float err = (a - (x - bb)) + (b - bb);
    s = x;
    e = err;
}

/* a = hi + lo with hi holding the upper 12 significand bits (Veltkamp, 2^12 + 1). */
void philox_split(float a, out float hi, out float lo) {
    precise float c = 4097.0 * a;
    precise float h = c - (c - a);
    precise float l = a - h;
    hi = h;
    lo = l;
}

/* Correctly rounded a * b + c from correctly rounded +, -, * only (GLSL fma() may be
 * unfused): Dekker's exact product a * b = uh + ul, then the sum of three rounded with
 * round-to-odd (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved
 * algorithms using rounding to odd", 2008): RN(th + RO(tl + ul)) with c + uh = th + tl.
 * Exact while the partial products stay normal (|a * b| above about 2^-100 or zero), which
 * holds for every call here. Checked against C's fmaf on 2e8 random and cancelling triples. */
float philox_fma(float a, float b, float c) {
    if (a == 0.0 || b == 0.0) {
        precise float z = a * b + c; /* signed zero product: one rounding, IEEE zero signs */
        return z;
    }
    float ah, al, bh, bl;
    philox_split(a, ah, al);
    philox_split(b, bh, bl);
    precise float uh = a * b;
    precise float ul = ((ah * bh - uh) + ah * bl + al * bh) + al * bl;
    float th, tl, v, ve;
    philox_two_sum(c, uh, th, tl);
    philox_two_sum(tl, ul, v, ve);
    uint vb = floatBitsToUint(v);
    if (ve != 0.0 && (vb & 1u) == 0u) vb += ((v > 0.0) == (ve > 0.0)) ? 1u : 0xffffffffu; /* to odd */
    precise float r = th + uintBitsToFloat(vb);
    return r;
}

uvec4 philox4x32_10(uvec4 c, uvec2 k) {
    for (int r = 0; r < 10; ++r) {
        uint hi0, lo0, hi1, lo1;
        umulExtended(0xD2511F53u, c.x, hi0, lo0);
        umulExtended(0xCD9E8D57u, c.z, hi1, lo1);
        c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k.x += 0x9E3779B9u;
        k.y += 0xBB67AE85u;
    }
    return c;
}

float philox_uniform(uint x) {
    precise float u = float((x >> 9) * 2u + 1u) * 5.9604644775390625e-8;
    return u;
}

/* log on (0, 1]: Cephes logf polynomial. */
float philox_log(float u) {
    uint bits = floatBitsToUint(u);
    int e = int((bits >> 23) & 0xffu) - 126;
    precise float x = uintBitsToFloat((bits & 0x007fffffu) | 0x3f000000u);
    if (x < 0.70710678) { e -= 1; x = x + x - 1.0; } else { x = x - 1.0; }
    precise float p = 7.0376836292e-2;
    p = philox_fma(p, x, -1.1514610310e-1);
    p = philox_fma(p, x, 1.1676998740e-1);
    p = philox_fma(p, x, -1.2420140846e-1);
    p = philox_fma(p, x, 1.4249322787e-1);
    p = philox_fma(p, x, -1.6668057665e-1);
    p = philox_fma(p, x, 2.0000714765e-1);
    p = philox_fma(p, x, -2.4999993993e-1);
    p = philox_fma(p, x, 3.3333331174e-1);
    precise float fe = float(e);
    precise float z = x * x;
    precise float y = (x * z) * p;
    y = philox_fma(fe, -2.12194440e-4, y);
    y = philox_fma(-0.5, z, y);
    precise float r = x + y;
    precise float res = philox_fma(fe, 0.693359375, r);
    return res;
}

/* (cos, sin) of 2*pi*u for u in (0, 1). */
vec2 philox_cossin(float u) {
    precise float v = u * 4.0;
    int q = int(v);
    precise float t = (v - float(q) - 0.5) * 1.57079632679489662;
    precise float t2 = t * t;
    precise float sp = -1.9515295891e-4;
    sp = philox_fma(sp, t2, 8.3321608736e-3);
    sp = philox_fma(sp, t2, -1.6666654611e-1);
    precise float st = philox_fma(t * t2, sp, t);
    precise float cp = 2.443315711809948e-5;
    cp = philox_fma(cp, t2, -1.388731625493765e-3);
    cp = philox_fma(cp, t2, 4.166664568298827e-2);
    precise float ct = philox_fma(t2 * t2, cp, philox_fma(-0.5, t2, 1.0));
    precise float h = 0.70710678118654752;
    precise float c = (ct - st) * h;
    precise float s = (ct + st) * h;
    switch (q & 3) {
    case 0: return vec2(c, s);
    case 1: return vec2(-s, c);
    case 2: return vec2(-c, -s);
    default: return vec2(s, -c);
    }
}

/* Correctly rounded sqrt of x (OpenCL's sqrt here) from Vulkan's approximate one: r moves by
 * one ulp while the root lies beyond the midpoint to a neighbour. With t = r*r - x (exact by
 * the fma near the root) and up / dn the spacings above / below r, every term of
 * (r + up/2)^2 - x = (t + r*up) + up^2/4 is a multiple of up^2, so its sign is that of
 * philox_fma(r, up, t); likewise (r - dn/2)^2 - x with philox_fma(-r, dn, t); the root is
 * never exactly a midpoint. Checked on lavapipe from starts 4 ulps off either way. */
float philox_sqrt(float x) {
    precise float r = sqrt(x);
    if (!(x > 0.0) || isinf(x)) return r;
    for (int it = 0; it < 8; ++it) {
        uint rb = floatBitsToUint(r);
        precise float hi = uintBitsToFloat(rb + 1u);
        precise float lo = uintBitsToFloat(rb - 1u);
        precise float up = hi - r;
        precise float dn = r - lo;
        precise float t = philox_fma(r, r, -x);
        if (philox_fma(r, up, t) < 0.0) {
            r = hi;      /* (r + up/2)^2 < x */
        } else if (philox_fma(-r, dn, t) >= 0.0) {
            r = lo;      /* (r - dn/2)^2 > x */
        } else {
            break;
        }
    }
    return r;
}

vec2 philox_pair(uint a, uint b) {
    precise float r = philox_sqrt(-2.0 * philox_log(philox_uniform(a)));
    vec2 cs = philox_cossin(philox_uniform(b));
    precise float zx = r * cs.x;
    precise float zy = r * cs.y;
    return vec2(zx, zy);
}

/* Normal number e = (e_hi:e_lo) of stream seed = (seed_hi:seed_lo): the element philox_randn
 * writes at offset e (random.cl's philox_normal_at with 64-bit values as two uints). */
float philox_normal_at(uint e_lo, uint e_hi, uint seed_lo, uint seed_hi) {
    uint blk_lo = (e_lo >> 2) | (e_hi << 30), blk_hi = e_hi >> 2;
    uvec4 w = philox4x32_10(uvec4(blk_lo, blk_hi, 0u, 0u), uvec2(seed_lo, seed_hi));
    int lane = int(e_lo & 3u);
    vec2 z = lane < 2 ? philox_pair(w.x, w.y) : philox_pair(w.z, w.w);
    return (lane & 1) != 0 ? z.y : z.x;
}

#endif
