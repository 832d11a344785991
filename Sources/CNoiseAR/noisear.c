/* The C API is implemented in Swift (Sources/NoiseARCAPI); this target only carries the
 * header (include/noisear.h at the top of the repository) so Swift sees its types. */
#include "noisear.h"
