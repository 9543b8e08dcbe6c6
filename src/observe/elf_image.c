/* The in-memory ELF objects gdb reads through its JIT interface
 * (gdb_jit.c): one relocatable object per batch of described functions,
 * as LuaJIT's and V8's: NOBITS .text sections at the code's executable
 * addresses (its bytes are read from the process, not the image), a
 * global function symbol per function, and one .eh_frame of their unwind
 * information with absolute 8-byte addresses.
 *
 * One .text section per run of adjacent functions (each starting where
 * the granules of the one before end): never one over the whole batch,
 * whose functions may lie far apart, since a section spanning other code
 * would claim it in gdb's address map (and overlap other objects'); and
 * not one per function either, since gdb's work at each registration
 * grows with the sections it knows (one per function made 100,000
 * functions take minutes to register under gdb). */
#define _GNU_SOURCE /* ucontext register names in arch/ */
#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../arch/arch.h"
#include "../internal.h"

enum { SEC_NULL, SEC_SHSTRTAB, SEC_STRTAB, SEC_SYMTAB, SEC_EH_FRAME,
       SEC_FIRST_TEXT };

static const char shstrtab[] = "\0.shstrtab\0.strtab\0.symtab\0.eh_frame\0.text";
#define NAME_SHSTRTAB 1
#define NAME_STRTAB 11
#define NAME_SYMTAB 19
#define NAME_EH_FRAME 27
#define NAME_TEXT 37

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

struct layout {
    size_t live, runs, strtab, symtab, eh_frame, shdrs, size;
};

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)(*(struct wxj_desc *const *)a)->exec,
              y = (uintptr_t)(*(struct wxj_desc *const *)b)->exec;
    return x < y ? -1 : x > y;
}

/* Where the granules of d end: where an adjacent function would start. */
static const uint8_t *granules_end(const struct wxj_desc *d)
{
    return d->exec + (d->size + WXJ_GRANULE - 1) / WXJ_GRANULE * WXJ_GRANULE;
}

/* Where each part goes; d: the n live descriptions by address. */
static struct layout measure(struct wxj_desc *const *d, size_t n)
{
    struct layout l = {0};
    size_t names = 1, eh = 0;
    l.live = n;
    for (size_t i = 0; i < n; i++) {
        l.runs += i == 0 || d[i]->exec != granules_end(d[i - 1]);
        names += strlen(d[i]->name) + 1;
        if (d[i]->cfi) /* each one's terminator is overwritten by the
                          next, one stays at the end */
            eh += wxj_eh_frame_build(d[i]->cfi, 0, false, 0, NULL) - 4;
    }
    l.strtab = sizeof(Elf64_Ehdr) + sizeof(shstrtab);
    l.symtab = align8(l.strtab + names);
    l.eh_frame = l.symtab + (l.live + 1) * sizeof(Elf64_Sym);
    l.shdrs = align8(l.eh_frame + (eh ? eh + 4 : 0));
    l.size = l.shdrs + (SEC_FIRST_TEXT + l.runs) * sizeof(Elf64_Shdr);
    return l;
}

static Elf64_Shdr section(Elf64_Word name, Elf64_Word type, Elf64_Xword flags,
                          Elf64_Addr addr, Elf64_Off off, Elf64_Xword size)
{
    Elf64_Shdr s = {0};
    s.sh_name = name;
    s.sh_type = type;
    s.sh_flags = flags;
    s.sh_addr = addr;
    s.sh_offset = off;
    s.sh_size = size;
    s.sh_addralign = 1;
    return s;
}

/* Writes the image of the n live descriptions d, by address, to img. */
static void fill(struct wxj_desc *const *d, size_t n, const struct layout *l,
                 uint8_t *img)
{
    Elf64_Ehdr eh = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_ident[EI_OSABI] = ELFOSABI_SYSV;
    eh.e_type = ET_REL;
    eh.e_machine = WXJ_ARCH_ELF_MACHINE;
    eh.e_version = EV_CURRENT;
    eh.e_shoff = l->shdrs;
    eh.e_ehsize = sizeof(eh);
    eh.e_shentsize = sizeof(Elf64_Shdr);
    eh.e_shnum = (Elf64_Half)(SEC_FIRST_TEXT + l->runs);
    eh.e_shstrndx = SEC_SHSTRTAB;
    memcpy(img, &eh, sizeof(eh));
    memcpy(img + sizeof(eh), shstrtab, sizeof(shstrtab));

    Elf64_Shdr *sh = (Elf64_Shdr *)(img + l->shdrs);
    size_t name = 1, eh_end = l->eh_frame, run = SEC_FIRST_TEXT - 1;
    const uint8_t *run_start = NULL;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || d[i]->exec != granules_end(d[i - 1])) {
            run_start = d[i]->exec;
            sh[++run] = section(NAME_TEXT, SHT_NOBITS,
                                SHF_ALLOC | SHF_EXECINSTR,
                                (uintptr_t)run_start, 0, 0);
        }
        sh[run].sh_size = (uintptr_t)(d[i]->exec + d[i]->size - run_start);
        size_t len = strlen(d[i]->name) + 1;
        memcpy(img + l->strtab + name, d[i]->name, len);
        Elf64_Sym sym = {0};
        sym.st_name = (Elf64_Word)name;
        sym.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
        sym.st_shndx = (Elf64_Half)run;
        sym.st_value = (uintptr_t)(d[i]->exec - run_start); /* in the
                                                               section */
        sym.st_size = d[i]->size;
        memcpy(img + l->symtab + (i + 1) * sizeof(sym), &sym, sizeof(sym));
        if (d[i]->cfi)
            eh_end += wxj_eh_frame_build(d[i]->cfi, (uintptr_t)d[i]->exec,
                                         false, 0, img + eh_end) - 4;
        name += len;
    }
    sh[SEC_SHSTRTAB] = section(NAME_SHSTRTAB, SHT_STRTAB, 0, 0,
                               sizeof(eh), sizeof(shstrtab));
    sh[SEC_STRTAB] = section(NAME_STRTAB, SHT_STRTAB, 0, 0, l->strtab, name);
    sh[SEC_SYMTAB] = section(NAME_SYMTAB, SHT_SYMTAB, 0, 0, l->symtab,
                             (l->live + 1) * sizeof(Elf64_Sym));
    sh[SEC_SYMTAB].sh_link = SEC_STRTAB;
    sh[SEC_SYMTAB].sh_info = 1; /* the first global symbol */
    sh[SEC_SYMTAB].sh_entsize = sizeof(Elf64_Sym);
    sh[SEC_SYMTAB].sh_addralign = 8;
    /* Allocated at the bytes' own address, so that any reader that
     * resolves pointers from the section's address finds them there. */
    size_t eh_len = eh_end > l->eh_frame ? eh_end + 4 - l->eh_frame : 0;
    sh[SEC_EH_FRAME] = section(NAME_EH_FRAME, SHT_PROGBITS,
                               eh_len ? SHF_ALLOC : 0,
                               (uintptr_t)img + l->eh_frame, l->eh_frame,
                               eh_len);
    sh[SEC_EH_FRAME].sh_addralign = 8;
}

int wxj_elf_image_build(struct wxj_desc *const *d, size_t n, uint8_t **out,
                        size_t *out_size)
{
    struct wxj_desc **live = malloc((n ? n : 1) * sizeof(*live));
    size_t k = 0;
    if (!live)
        return ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (d[i])
            live[k++] = d[i];
    qsort(live, k, sizeof(*live), by_address);
    struct layout l = measure(live, k);
    uint8_t *img = calloc(1, l.size);
    if (img) {
        fill(live, k, &l, img);
        *out = img;
        *out_size = l.size;
    }
    free(live);
    return img ? 0 : ENOMEM;
}
