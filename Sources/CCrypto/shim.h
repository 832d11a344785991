// OpenSSL's libcrypto, used for SHA-256 keys of the kernel program cache.
#ifndef NOISEAR_CCRYPTO_SHIM_H
#define NOISEAR_CCRYPTO_SHIM_H
#include <openssl/sha.h>
#endif
