// libpng (libpng-dev): PNG files through the simplified png_image API (no setjmp on the Swift
// side), plus zlib for the CRC-32 and (de)compression of PNG text chunks.
#ifndef NOISEAR_CPNG_SHIM_H
#define NOISEAR_CPNG_SHIM_H
#include <png.h>
#include <zlib.h>
#endif
