// Target the OpenCL 1.2 API: vendor-neutral, available on every driver we care about.
#ifndef NOISEAR_COPENCL_SHIM_H
#define NOISEAR_COPENCL_SHIM_H
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#endif
