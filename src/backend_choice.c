/* Which backend a heap gets: the options, the environment, and probes of
 * what this system allows. Also the diagnostic probe of the API. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const struct wxj_backend *const backends[] = {
    [WXJIT_BACKEND_TOGGLE] = &wxj_backend_toggle,
    [WXJIT_BACKEND_DUALMAP] = &wxj_backend_dualmap,
    [WXJIT_BACKEND_RWX] = &wxj_backend_rwx,
    [WXJIT_BACKEND_PROCMEM] = &wxj_backend_procmem,
};
static const char *const backend_names[] = {"auto", "toggle", "dualmap",
                                             "rwx", "procmem"};
#define BACKENDS (sizeof(backend_names) / sizeof(*backend_names))

int wxjit_backend_name(wxjit_backend backend, const char **out)
{
    if ((unsigned)backend >= BACKENDS || !out)
        return EINVAL;
    *out = backend_names[backend];
    return 0;
}

/* AUTO's order. dualmap first: no system call and no fault per install
 * (BENCHMARKS.md), at the price of a standing writable alias of the code.
 * Then procmem: no alias and no stall, one pwrite per write. toggle last:
 * two mprotect per write, and executors of the page wait meanwhile. With
 * WXJIT_HEAP_NO_WRITABLE_ALIAS the order starts at procmem. */
static const wxjit_backend auto_order[] = {
    WXJIT_BACKEND_DUALMAP, WXJIT_BACKEND_PROCMEM, WXJIT_BACKEND_TOGGLE};

static int auto_pick(bool no_alias, wxjit_backend *out, const char **reason)
{
    int err = ENOSYS;
    for (size_t i = no_alias ? 1 : 0;
         i < sizeof(auto_order) / sizeof(*auto_order); i++) {
        /* Code must run: AUTO never picks a backend whose code would be
         * silently stale (under an emulator). */
        if ((err = backends[auto_order[i]]->probe(true, reason)) == 0) {
            *out = auto_order[i];
            return 0;
        }
    }
    *reason = "no backend works here";
    return err;
}

/* WXJIT_BACKEND, when set to anything but auto, replaces AUTO. */
static int backend_from_env(wxjit_backend *out)
{
    const char *env = getenv("WXJIT_BACKEND");
    *out = WXJIT_BACKEND_AUTO;
    if (!env || !*env || !strcmp(env, "auto"))
        return 0;
    for (unsigned i = 1; i < BACKENDS; i++)
        if (i != WXJIT_BACKEND_RWX && !strcmp(env, backend_names[i])) {
            *out = (wxjit_backend)i;
            return 0;
        }
    return EINVAL; /* rwx is never chosen from outside */
}

static bool has_alias(wxjit_backend id)
{
    return id == WXJIT_BACKEND_DUALMAP || id == WXJIT_BACKEND_RWX;
}

/* The flags make sense for the backend asked for (AUTO: for some). */
static int check_flags(wxjit_backend id, unsigned flags)
{
    const unsigned known = WXJIT_HEAP_RW_ON_DEMAND | WXJIT_HEAP_ALLOW_RWX |
                           WXJIT_HEAP_NO_WRITABLE_ALIAS |
                           WXJIT_HEAP_DEFER_TRAP_FILL |
                           WXJIT_HEAP_PERF_MAP | WXJIT_HEAP_JITDUMP |
                           WXJIT_HEAP_GDB | WXJIT_HEAP_UNWIND;
    bool no_alias = flags & WXJIT_HEAP_NO_WRITABLE_ALIAS;
    if ((flags & ~known) || (unsigned)id >= BACKENDS)
        return EINVAL;
    if (id == WXJIT_BACKEND_RWX && !(flags & WXJIT_HEAP_ALLOW_RWX))
        return EPERM;
    if (id != WXJIT_BACKEND_RWX && (flags & WXJIT_HEAP_ALLOW_RWX))
        return EINVAL;
    if ((flags & WXJIT_HEAP_RW_ON_DEMAND) &&
        (no_alias ||
         (id != WXJIT_BACKEND_DUALMAP && id != WXJIT_BACKEND_AUTO)))
        return EINVAL;
    /* AUTO: applies if it picks a backend that defers (heap.c). */
    if ((flags & WXJIT_HEAP_DEFER_TRAP_FILL) && id != WXJIT_BACKEND_AUTO &&
        backends[id]->deferral == WXJ_FILL_AT_FREE)
        return EINVAL;
    return no_alias && has_alias(id) ? EINVAL : 0;
}

int wxj_choose_backend(const wxjit_heap_options *o,
                       const struct wxj_backend **out)
{
    wxjit_backend id = o->backend;
    const char *reason;
    int err = check_flags(id, o->flags);
    if (err == 0 && id == WXJIT_BACKEND_AUTO &&
        (err = backend_from_env(&id)) == 0 &&
        (o->flags & WXJIT_HEAP_NO_WRITABLE_ALIAS) && has_alias(id))
        err = EINVAL; /* the variable cannot overrule that flag */
    if (err)
        return err;
    if (id == WXJIT_BACKEND_AUTO)
        err = auto_pick(o->flags & WXJIT_HEAP_NO_WRITABLE_ALIAS, &id,
                        &reason);
    else
        err = backends[id]->probe(false, &reason);
    if (err == 0)
        *out = backends[id];
    return err;
}

int wxjit_backend_probe(wxjit_backend backend, const char **reason)
{
    const char *why = NULL;
    wxjit_backend id = backend;
    if ((unsigned)backend >= BACKENDS)
        return EINVAL;
    wxj_fork_init(); /* as at heap creation: procmem's probe opens */
    int err = backend == WXJIT_BACKEND_AUTO ? auto_pick(false, &id, &why)
                                            : backends[id]->probe(true, &why);
    if (reason)
        *reason = err ? why : NULL;
    return err;
}
