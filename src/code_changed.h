/* One place that hears about every change to executable bytes, so that
 * whoever caches instructions forgets the old ones: the CPU (instruction
 * cache, src/arch/) and a binary translator running the process.
 *
 * Valgrind translates code once and runs the translation until told the
 * bytes changed. It notices some changes itself (munmap, an mprotect that
 * removes PROT_EXEC, and, with its default --smc-check=all-non-file, a
 * check of code in anonymous mappings), but not bytes written through
 * dualmap's RW view of a shared object, which it counts as file-backed:
 * without the client request below, a function installed where freed code
 * was would run the old code under Valgrind. The request is a few
 * instructions that do nothing natively; it is compiled in when
 * <valgrind/valgrind.h> exists (WXJIT_HAVE_VALGRIND_H, from CMake), and
 * adds no runtime dependency. */
#ifndef WXJ_CODE_CHANGED_H
#define WXJ_CODE_CHANGED_H

#include <stdbool.h>

#include "arch/arch.h"

#ifdef WXJIT_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

/* Whether the process runs under Valgrind (never without its header). */
static inline bool wxj_under_valgrind(void)
{
#ifdef WXJIT_HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND;
#else
    return false;
#endif
}

/* WXJ_CHANGE_* bits of the code changes this thread's operation made so
 * far; core_sync.c syncs the other cores at its end if the CPU needs it. */
extern __thread unsigned wxj_code_changes
    __attribute__((tls_model("initial-exec")));

/* Called on every close of a write window, before the window's pages are
 * released to executors waiting in the fault handler. */
static inline void wxj_code_changed(const void *exec, size_t len)
{
    wxj_code_changes |= WXJ_CHANGE_NEW;
    wxj_arch_flush_icache(exec, len);
#ifdef WXJIT_HAVE_VALGRIND_H
    VALGRIND_DISCARD_TRANSLATIONS(exec, len);
#endif
}

/* After the kernel wrote the bytes (procmem): it synchronised the caches
 * (backend_procmem.c says where); a translator still has to hear of it. */
static inline void wxj_code_changed_by_kernel(const void *exec, size_t len)
{
    wxj_code_changes |= WXJ_CHANGE_NEW;
#ifdef WXJIT_HAVE_VALGRIND_H
    VALGRIND_DISCARD_TRANSLATIONS(exec, len);
#else
    (void)exec;
    (void)len;
#endif
}

#endif
