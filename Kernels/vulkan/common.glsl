/* Shared by every compute shader in Kernels/vulkan (included, not compiled on its own).
 *
 * Each shader is the GLSL twin of one OpenCL kernel of Kernels/*.cl with the same name:
 * - every global buffer argument, in order, is a storage buffer at binding 0, 1, 2, ...
 *   (set 0), bound whole; element offsets travel as ints like in OpenCL;
 * - every scalar argument, in order, is a 4-byte member of the push-constant block (int8
 *   arguments are int[8]); the host writes them as consecutive 32-bit words, so the block has
 *   no padding (std430 scalars and int arrays only, 128 bytes at most);
 * - the kernel parameters that OpenCL takes as -D defines are the specialization constants
 *   below (ids fixed here and in VulkanBackend.specIDs), work-group size included.
 * The host rounds every dimension of the global size up to a multiple of the work-group
 * size, so every shader checks its bounds. A 1-D launch may be folded into x and y when it
 * needs more work groups than the device allows in x: 1-D shaders read their index through
 * gid0() and group0(), never gl_GlobalInvocationID.x directly. */
#ifndef NOISEAR_COMMON_GLSL
#define NOISEAR_COMMON_GLSL

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(constant_id = 3) const int GEMM_TSM = 64;
layout(constant_id = 4) const int GEMM_TSN = 64;
layout(constant_id = 5) const int GEMM_TSK = 16;
layout(constant_id = 6) const int GEMM_WPTM = 4;
layout(constant_id = 7) const int GEMM_WPTN = 4;
layout(constant_id = 8) const int ROW_WG = 64;
layout(constant_id = 9) const int ATT_QB = 1;
layout(constant_id = 10) const int ATT_KB = 16;
layout(constant_id = 11) const int ATT_WG = 1;
layout(constant_id = 12) const int ATT_LOCAL = 0;
layout(constant_id = 13) const int ATT_D = 64;
layout(constant_id = 14) const int ATT_DV = 64;
layout(constant_id = 15) const int ATT_VW = 1;
layout(constant_id = 16) const int SVD_WG = 64;
layout(constant_id = 17) const int CONV_TSM = 64;
layout(constant_id = 18) const int CONV_TSN = 64;
layout(constant_id = 19) const int CONV_TSK = 16;
layout(constant_id = 20) const int CONV_WPTM = 4;
layout(constant_id = 21) const int CONV_WPTN = 4;

/* Linear index of a 1-D launch (folded over x and y by the host when needed). */
int gid0() {
    return int(gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x);
}

/* Work-group index of a 1-D launch. */
int group0() {
    return int(gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x);
}

/* Offset of linear index i over an up-to-6-D shape padded with leading 1s (OpenCL's
 * strided_offset with int8 lanes s0..s5 as array entries 0..5). */
int strided_offset(int i, int shape[8], int strides[8]) {
    int off = 0;
    for (int d = 5; d >= 1; --d) {
        if (shape[d] != 1) {
            int q = i / shape[d];
            off += (i - q * shape[d]) * strides[d];
            i = q;
        }
    }
    return off + i * strides[0];
}

#endif
