#ifndef NOISEAR_CSUPPORT_H
#define NOISEAR_CSUPPORT_H

/* The path of the shared object (or executable) holding `address`, as the dynamic linker knows
 * it (dladdr), or NULL. The string belongs to the linker and lives as long as the object. */
const char *noisear_image_path(const void *address);

#endif
