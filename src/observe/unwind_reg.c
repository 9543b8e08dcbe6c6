/* Unwind information for the process's own unwinder, so that C++
 * exceptions, _Unwind_Backtrace and backtrace() cross JIT frames: each
 * description with unwind information gets an .eh_frame copy with
 * absolute addresses, registered with __register_frame and deregistered
 * with __deregister_frame at its free.
 *
 * Those come from the unwinder the process loaded (libgcc_s, or LLVM's
 * libunwind), never from wxjit's link: they are looked up with dlsym at
 * each registration until found (a C program may load a C++ library, and
 * with it libgcc_s, after creating its heap); while none is loaded a
 * description with unwind information fails with ENOTSUP, so that no JIT
 * believes its frames unwind when they cannot. The two disagree on the
 * argument: libgcc
 * takes the start of an .eh_frame section (CIEs and FDEs up to a zero
 * terminator); libunwind, recognised by its __unw_add_dynamic_fde, takes
 * one FDE. */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

typedef void (*frame_fn)(const void *);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static frame_fn register_frame, deregister_frame;
static bool fde_argument; /* libunwind's convention */

/* 0 once the unwinder's functions are known, else ENOTSUP. */
static int find_unwinder(void)
{
    pthread_mutex_lock(&lock);
    if (!register_frame) {
        /* dlsym returns void *; the unwinders' own declarations are
         * functions, as POSIX allows converting. */
        void *reg = dlsym(RTLD_DEFAULT, "__register_frame");
        void *dereg = dlsym(RTLD_DEFAULT, "__deregister_frame");
        if (reg && dereg) {
            fde_argument = dlsym(RTLD_DEFAULT, "__unw_add_dynamic_fde");
            deregister_frame = (frame_fn)dereg;
            register_frame = (frame_fn)reg;
        }
    }
    int err = register_frame ? 0 : ENOTSUP;
    pthread_mutex_unlock(&lock);
    return err;
}

/* What the unwinder is handed: the section, or its one FDE. */
static const uint8_t *argument(const uint8_t *eh)
{
    uint32_t cie_len;
    memcpy(&cie_len, eh, 4);
    return fde_argument ? eh + 4 + cie_len : eh;
}

int wxj_unwind_register(struct wxj_desc *d)
{
    int err = find_unwinder();
    if (err)
        return err;
    size_t len = wxj_eh_frame_build(d->cfi, (uintptr_t)d->exec, false, 0,
                                    NULL);
    uint8_t *eh = malloc(len);
    if (!eh)
        return ENOMEM;
    wxj_eh_frame_build(d->cfi, (uintptr_t)d->exec, false, 0, eh);
    register_frame(argument(eh));
    d->eh_frame = eh;
    return 0;
}

void wxj_unwind_deregister(struct wxj_desc *d)
{
    if (!d->eh_frame)
        return;
    deregister_frame(argument(d->eh_frame));
    free(d->eh_frame);
    d->eh_frame = NULL;
}
