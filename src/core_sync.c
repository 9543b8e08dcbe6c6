/* Syncing the other cores' instruction streams after an operation changed
 * code, where the CPU needs it (WXJ_ARCH_CORE_SYNC; the reasoning for each
 * CPU is in src/arch/<cpu>.h). Changes are noted as they are made (the
 * window closes of code_changed.h, the live-code calls) and synced once,
 * at the operation's end: one membarrier however many pages it wrote. */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include "code_changed.h"
#include "internal.h"

__thread unsigned wxj_code_changes __attribute__((tls_model("initial-exec")));

void wxj_core_sync_changes(void)
{
    unsigned changes = wxj_code_changes;
    wxj_code_changes = 0;
    if (changes & WXJ_ARCH_CORE_SYNC)
        wxj_os_core_sync();
}

void wxj_core_sync_forget(void)
{
    wxj_code_changes = 0;
}
