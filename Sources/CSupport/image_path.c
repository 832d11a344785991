#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include "csupport.h"

const char *noisear_image_path(const void *address) {
    Dl_info info;
    if (dladdr(address, &info) == 0 || info.dli_fname == NULL || info.dli_fname[0] != '/') return NULL;
    return info.dli_fname;
}
