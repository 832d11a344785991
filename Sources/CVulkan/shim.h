/* Vulkan's C declarations (libvulkan-dev's headers) without prototypes: the backend loads
 * libvulkan.so.1 with dlopen at run time, so a binary runs where no Vulkan loader exists. */
#define VK_NO_PROTOTYPES 1
#include <vulkan/vulkan.h>
