/* Shared helpers, prepended to every program. OpenCL C 1.2, vendor-neutral.
 * Every buffer argument comes with an element offset so outputs can live anywhere in a
 * buffer (sub-buffers would need device-specific alignment). */
#ifndef NOISEAR_COMMON_H
#define NOISEAR_COMMON_H

/* Offset of linear index i over an up-to-6-D shape (int8 lanes s0..s5 used; the host
 * collapses mergeable axes and pads with leading 1s, whose divisions are skipped). */
#define STRIDED_STEP(lane) \
    if (shape.lane != 1) { q = i / shape.lane; off += (i - q * shape.lane) * strides.lane; i = q; }
inline int strided_offset(int i, int8 shape, int8 strides) {
    int off = 0, q;
    STRIDED_STEP(s5)
    STRIDED_STEP(s4)
    STRIDED_STEP(s3)
    STRIDED_STEP(s2)
    STRIDED_STEP(s1)
    off += i * strides.s0;
    return off;
}

#endif
