/* gdb's JIT interface (gdb manual, "JIT Compilation Interface"): a list of
 * in-memory symbol files that gdb reads when it attaches and, through a
 * breakpoint on __jit_debug_register_code, whenever the list changes.
 * Each batch of described functions is one ELF object (elf_image.c);
 * freeing one of its functions replaces the object by one without it, or
 * removes it with the last. One lock serialises every change, as the
 * manual asks of a multi-threaded JIT.
 *
 * Other libraries define these symbols too (LLVM's ORC and MCJIT,
 * wasmtime, V8...). wxjit's are weak, so that a static link with another
 * definition does not fail, and protected, so that in the shared
 * libwxjit wxjit's own references never leave it: each library keeps its
 * own list and gdb (10 and later) reads them all. A static link in which
 * another library's definitions won makes wxjit's references reach that
 * library's list, which is changed under a lock wxjit cannot take: wxjit
 * then refuses to touch it (wxj_gdb_usable). */
#include <errno.h>
#include <stdlib.h>

#include "../internal.h"

enum { JIT_NOACTION = 0, JIT_REGISTER_FN, JIT_UNREGISTER_FN };

struct jit_code_entry {
    struct jit_code_entry *next_entry, *prev_entry;
    const char *symfile_addr;
    uint64_t symfile_size;
};

struct jit_descriptor {
    uint32_t version;
    uint32_t action_flag; /* jit_actions_t, 32 bits wide */
    struct jit_code_entry *relevant_entry, *first_entry;
};

/* gdb puts a breakpoint here: noinline and the asm keep every call. */
void __jit_debug_register_code(void)
    __attribute__((weak, noinline, visibility("protected")));
void __jit_debug_register_code(void)
{
    __asm__ __volatile__("" ::: "memory");
}

/* Version 1 statically: gdb may read it before any code runs. */
extern struct jit_descriptor __jit_debug_descriptor
    __attribute__((weak, visibility("protected")));
struct jit_descriptor __jit_debug_descriptor = {1, JIT_NOACTION, NULL, NULL};
/* wxjit's own storage, whichever definition the link chose for the name. */
extern struct jit_descriptor wxj_own_descriptor
    __attribute__((alias("__jit_debug_descriptor"), visibility("hidden")));

/* A batch's object: the descriptions it holds (NULL once freed). */
struct wxj_gdb_object {
    struct jit_code_entry entry;
    uint8_t *image;
    size_t count, live;
    struct wxj_desc *desc[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

int wxj_gdb_usable(void)
{
    /* Through a volatile pointer: the compiler may not fold the
     * comparison, which only the link decides. */
    struct jit_descriptor *volatile named = &__jit_debug_descriptor;
    return named == &wxj_own_descriptor ? 0 : ENOTSUP;
}

/* Lock held. */
static void notify(struct jit_code_entry *e, uint32_t action)
{
    __jit_debug_descriptor.relevant_entry = e;
    __jit_debug_descriptor.action_flag = action;
    __jit_debug_register_code();
    __jit_debug_descriptor.action_flag = JIT_NOACTION;
}

/* Lock held. */
static void link_object(struct wxj_gdb_object *o)
{
    struct jit_code_entry *e = &o->entry, *first;
    first = __jit_debug_descriptor.first_entry;
    e->prev_entry = NULL;
    e->next_entry = first;
    if (first)
        first->prev_entry = e;
    __jit_debug_descriptor.first_entry = e;
    notify(e, JIT_REGISTER_FN);
}

/* Lock held. */
static void unlink_object(struct wxj_gdb_object *o)
{
    struct jit_code_entry *e = &o->entry;
    if (e->prev_entry)
        e->prev_entry->next_entry = e->next_entry;
    else
        __jit_debug_descriptor.first_entry = e->next_entry;
    if (e->next_entry)
        e->next_entry->prev_entry = e->prev_entry;
    notify(e, JIT_UNREGISTER_FN);
}

/* Builds o's image from its live descriptions. */
static int build(struct wxj_gdb_object *o)
{
    size_t size;
    uint8_t *image;
    int err = wxj_elf_image_build(o->desc, o->count, &image, &size);
    if (err)
        return err;
    free(o->image);
    o->image = image;
    o->entry.symfile_addr = (const char *)image;
    o->entry.symfile_size = size;
    return 0;
}

static int register_some(struct wxj_desc *const *d, size_t n)
{
    struct wxj_gdb_object *o = calloc(1, sizeof(*o) + n * sizeof(*d));
    if (!o)
        return ENOMEM;
    o->count = o->live = n;
    for (size_t i = 0; i < n; i++)
        o->desc[i] = d[i];
    int err = build(o);
    if (err) {
        free(o);
        return err;
    }
    for (size_t i = 0; i < n; i++) {
        d[i]->gdb = o;
        d[i]->gdb_index = i;
    }
    pthread_mutex_lock(&lock);
    link_object(o);
    pthread_mutex_unlock(&lock);
    return 0;
}

int wxj_gdb_register(struct wxj_desc *const *d, size_t n)
{
    for (size_t done = 0; done < n; done += WXJIT_GDB_BATCH_MAX) {
        size_t k = n - done < WXJIT_GDB_BATCH_MAX ? n - done
                                                  : WXJIT_GDB_BATCH_MAX;
        int err = register_some(d + done, k);
        if (err) {
            for (size_t i = 0; i < done; i++)
                wxj_gdb_remove(d[i], false);
            return err;
        }
    }
    return 0;
}

/* d->gdb of a settled description is read and changed under the lock:
 * frees of functions of one object may run at once. */
void wxj_gdb_remove(struct wxj_desc *d, bool rebuild)
{
    pthread_mutex_lock(&lock);
    struct wxj_gdb_object *o = d->gdb;
    if (!o) {
        pthread_mutex_unlock(&lock);
        return;
    }
    d->gdb = NULL;
    o->desc[d->gdb_index] = NULL;
    bool keep = --o->live > 0;
    if (keep && rebuild) {
        /* Without memory for the smaller image the others go too: gdb
         * must not keep the freed function's name. */
        unlink_object(o);
        keep = build(o) == 0;
        if (keep)
            link_object(o);
    } else if (!keep) {
        unlink_object(o);
    }
    if (!keep)
        for (size_t i = 0; i < o->count; i++)
            if (o->desc[i])
                o->desc[i]->gdb = NULL;
    pthread_mutex_unlock(&lock);
    if (!keep) {
        free(o->image);
        free(o);
    }
}

/* Around fork(), as perf_map.c: the child's list is the parent's, as it
 * was; its lock must be free there. */
void wxj_gdb_fork_prepare(void)
{
    pthread_mutex_lock(&lock);
}

void wxj_gdb_fork_release(void)
{
    pthread_mutex_unlock(&lock);
}
