/* Shared helpers, prepended to every program. OpenCL C 1.2, vendor-neutral.
 * Every buffer argument comes with an element offset so outputs can live anywhere in a
 * buffer (sub-buffers would need device-specific alignment). */
#ifndef NOISEAR_COMMON_H
#define NOISEAR_COMMON_H

/* Multi-index of linear index i over an up-to-6-D shape (int8 lanes s0..s5 used). */
inline int strided_offset(int i, int8 shape, int8 strides) {
    int off = 0, q;
    q = i / shape.s5; off += (i - q * shape.s5) * strides.s5; i = q;
    q = i / shape.s4; off += (i - q * shape.s4) * strides.s4; i = q;
    q = i / shape.s3; off += (i - q * shape.s3) * strides.s3; i = q;
    q = i / shape.s2; off += (i - q * shape.s2) * strides.s2; i = q;
    q = i / shape.s1; off += (i - q * shape.s1) * strides.s1; i = q;
    off += i * strides.s0;
    return off;
}

#endif
