/* One place that hears about every change to executable bytes, so that
 * whoever caches instructions forgets the old ones: the CPU (instruction
 * cache, src/arch/) and a binary translator running the process. */
#ifndef WXJ_CODE_CHANGED_H
#define WXJ_CODE_CHANGED_H

#include "arch/arch.h"

static inline void wxj_code_changed(const void *exec, size_t len)
{
    wxj_arch_flush_icache(exec, len);
}

#endif
