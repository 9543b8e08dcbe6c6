/* Unwind information as .eh_frame bytes (the Linux Standard Base's
 * "Exception Frames": DWARF call frame information with a CIE and FDEs):
 * the one CIE + one FDE a JIT gives is checked and normalised into a
 * struct wxj_cfi; one is made for this CPU's frame-pointer prologue; and
 * each tool gets its own encoding of it: absolute 8-byte FDE pointers for
 * the process's unwinder and gdb (the bytes may live anywhere), pc-relative
 * 4-byte ones plus an .eh_frame_hdr for perf's jitdump, laid out as
 * `perf inject --jit` places them after the code. CFA instructions are
 * copied, never interpreted: the tools read them. */
#define _GNU_SOURCE /* strnlen; ucontext register names in arch/ */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../arch/arch.h"
#include "../internal.h"

/* Pointer encodings (LSB, "DWARF Exception Header Encoding"). */
#define PE_ABSPTR 0x00u
#define PE_UDATA2 0x02u
#define PE_UDATA4 0x03u
#define PE_UDATA8 0x04u
#define PE_SDATA2 0x0au
#define PE_SDATA4 0x0bu
#define PE_SDATA8 0x0cu
#define PE_PCREL 0x10u
#define PE_DATAREL 0x30u
/* A 32-bit length of all ones announces the 64-bit format, which no JIT
 * needs for one function: refused. */
#define LENGTH_64BIT 0xffffffffu

/* ---- reading ------------------------------------------------------------- */
struct reader {
    const uint8_t *p, *end;
    bool ok; /* false once a read ran past end */
};

static bool take(struct reader *r, size_t n)
{
    if (!r->ok || (size_t)(r->end - r->p) < n)
        return r->ok = false;
    return true;
}

/* n bytes, little-endian: every supported CPU is. */
static uint64_t read_u(struct reader *r, size_t n)
{
    uint64_t v = 0;
    if (!take(r, n))
        return 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return v;
}

static uint64_t read_leb(struct reader *r, bool is_signed)
{
    uint64_t v = 0;
    unsigned shift = 0;
    uint8_t b;
    do {
        if (!take(r, 1) || shift > 63)
            return r->ok = false;
        b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    if (is_signed && shift < 64 && (b & 0x40))
        v |= ~(uint64_t)0 << shift;
    return v;
}

/* The width of an encoding's value; 0 for one wxjit does not take. */
static size_t enc_width(uint8_t enc)
{
    switch (enc) {
    case PE_ABSPTR: case PE_UDATA8: case PE_SDATA8: return 8;
    case PE_UDATA4: case PE_SDATA4: return 4;
    case PE_UDATA2: case PE_SDATA2: return 2;
    default: return 0; /* pc-relative and the rest: see the header */
    }
}

/* A value in enc as a signed offset (from the function). */
static int64_t read_enc(struct reader *r, uint8_t enc)
{
    size_t w = enc_width(enc);
    uint64_t v = read_u(r, w);
    if ((enc == PE_SDATA2 || enc == PE_SDATA4) && (v >> (8 * w - 1)))
        v |= ~(uint64_t)0 << (8 * w);
    return (int64_t)v;
}

/* A length-prefixed record starting at eh + off that ends exactly within
 * len; its body is in *body. */
static bool record(const uint8_t *eh, size_t len, size_t off,
                   struct reader *body)
{
    struct reader r = {eh + off, eh + len, true};
    uint64_t n = read_u(&r, 4);
    if (!r.ok || n == 0 || n == LENGTH_64BIT || n > (uint64_t)(r.end - r.p))
        return false;
    *body = (struct reader){r.p, r.p + n, true};
    return true;
}

static struct wxj_cfi *cfi_new(const uint8_t *cie, size_t cie_len,
                               const uint8_t *fde, size_t fde_len)
{
    struct wxj_cfi *c = malloc(sizeof(*c) + cie_len + fde_len);
    if (c) {
        c->cie_len = cie_len;
        c->fde_len = fde_len;
        memcpy(c->insns, cie, cie_len);
        memcpy(c->insns + cie_len, fde, fde_len);
    }
    return c;
}

int wxj_cfi_parse(const uint8_t *eh, size_t len, size_t size,
                  struct wxj_cfi **out)
{
    struct reader cie, fde;
    if (!record(eh, len, 0, &cie) || read_u(&cie, 4) != 0)
        return EINVAL; /* CIE id 0: .eh_frame's, not .debug_frame's */
    unsigned version = (unsigned)read_u(&cie, 1);
    const char *aug = (const char *)cie.p;
    size_t aug_len = cie.ok ? strnlen(aug, (size_t)(cie.end - cie.p)) : 0;
    if ((version != 1 && version != 3) || !take(&cie, aug_len + 1))
        return EINVAL;
    cie.p += aug_len + 1;
    bool z = !strcmp(aug, "zR");
    if (!z && aug_len != 0)
        return EINVAL; /* personality, LSDA, signal frames: not taken */
    uint64_t code_align = read_leb(&cie, false);
    int64_t data_align = (int64_t)read_leb(&cie, true);
    uint64_t ra = version == 1 ? read_u(&cie, 1) : read_leb(&cie, false);
    uint8_t enc = PE_ABSPTR;
    if (z && (read_leb(&cie, false) != 1 ||
              enc_width(enc = (uint8_t)read_u(&cie, 1)) == 0))
        return EINVAL;
    if (!cie.ok)
        return EINVAL;

    /* The FDE follows the CIE and ends the bytes; its CIE pointer is the
     * distance back to the CIE's start from the pointer itself. */
    size_t fde_off = (size_t)(cie.end - eh);
    if (!record(eh, len, fde_off, &fde) || fde.end != eh + len ||
        read_u(&fde, 4) != fde_off + 4)
        return EINVAL;
    int64_t begin = read_enc(&fde, enc);
    int64_t range = read_enc(&fde, enc);
    if ((z && read_leb(&fde, false) != 0) || !fde.ok || begin < 0 ||
        range <= 0 || (uint64_t)begin > size ||
        (uint64_t)range > size - (uint64_t)begin || code_align == 0)
        return EINVAL;
    struct wxj_cfi *c = cfi_new(cie.p, (size_t)(cie.end - cie.p), fde.p,
                                (size_t)(fde.end - fde.p));
    if (!c)
        return ENOMEM;
    c->code_align = code_align;
    c->data_align = data_align;
    c->ra_reg = ra;
    c->pc_offset = (uint64_t)begin;
    c->pc_range = (uint64_t)range;
    *out = c;
    return 0;
}

int wxj_cfi_frame_pointer(const uint8_t *exec, size_t size,
                          struct wxj_cfi **out)
{
    static const uint8_t prologue[] = {WXJ_CFI_FP_PROLOGUE};
    static const uint8_t cie[] = {WXJ_CFI_CIE_INSNS};
    static const uint8_t fde[] = {WXJ_CFI_FP_INSNS};
    if (size < sizeof(prologue) || memcmp(exec, prologue, sizeof(prologue)))
        return EINVAL;
    struct wxj_cfi *c = cfi_new(cie, sizeof(cie), fde, sizeof(fde));
    if (!c)
        return ENOMEM;
    c->code_align = WXJ_CFI_CODE_ALIGN;
    c->data_align = WXJ_CFI_DATA_ALIGN;
    c->ra_reg = WXJ_CFI_RA_REG;
    c->pc_offset = 0;
    c->pc_range = size;
    *out = c;
    return 0;
}

/* ---- writing ------------------------------------------------------------- */
struct writer {
    uint8_t *out; /* NULL: only count */
    size_t n;
};

static void put_u(struct writer *w, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++, v >>= 8)
        if (w->out)
            w->out[w->n + i] = (uint8_t)v;
    w->n += bytes;
}

static void put_leb(struct writer *w, uint64_t v, bool is_signed)
{
    for (;;) {
        uint8_t b = v & 0x7f;
        /* Arithmetic shift for signed values (two's complement). */
        v = is_signed ? (uint64_t)((int64_t)v >> 7) : v >> 7;
        bool done = is_signed ? (v == 0 && !(b & 0x40)) ||
                                    (v == ~(uint64_t)0 && (b & 0x40))
                              : v == 0;
        put_u(w, done ? b : b | 0x80, 1);
        if (done)
            return;
    }
}

static void put_bytes(struct writer *w, const uint8_t *p, size_t n)
{
    if (w->out)
        memcpy(w->out + w->n, p, n);
    w->n += n;
}

/* Pads the record that started at `start` with DW_CFA_nop (0) to a
 * multiple of 8 bytes, as the tools expect of address-sized records, and
 * fills in its length. */
static void end_record(struct writer *w, size_t start)
{
    while ((w->n - start) % 8)
        put_u(w, 0, 1);
    if (w->out) {
        struct writer len = {w->out, start};
        put_u(&len, w->n - start - 4, 4);
    }
}

size_t wxj_eh_frame_build(const struct wxj_cfi *cfi, uint64_t pc, bool pcrel,
                          uint64_t at, uint8_t *out)
{
    struct writer w = {out, 0};
    /* Version 1 stores the return-address column in a byte; 3, as ULEB. */
    bool v1 = cfi->ra_reg < 256;
    put_u(&w, 0, 4);
    put_u(&w, 0, 4); /* CIE id */
    put_u(&w, v1 ? 1 : 3, 1);
    put_bytes(&w, (const uint8_t *)"zR", 3);
    put_leb(&w, cfi->code_align, false);
    put_leb(&w, (uint64_t)cfi->data_align, true);
    if (v1)
        put_u(&w, cfi->ra_reg, 1);
    else
        put_leb(&w, cfi->ra_reg, false);
    put_leb(&w, 1, false); /* augmentation data: the R byte */
    put_u(&w, pcrel ? PE_PCREL | PE_SDATA4 : PE_ABSPTR, 1);
    put_bytes(&w, cfi->insns, cfi->cie_len);
    end_record(&w, 0);

    size_t fde = w.n;
    put_u(&w, 0, 4);
    put_u(&w, fde + 4, 4); /* back to the CIE at 0 */
    uint64_t begin = pc + cfi->pc_offset;
    if (pcrel) {
        put_u(&w, begin - (at + w.n), 4); /* wraps to the signed distance */
        put_u(&w, cfi->pc_range, 4);
    } else {
        put_u(&w, begin, 8);
        put_u(&w, cfi->pc_range, 8);
    }
    put_leb(&w, 0, false); /* no augmentation data */
    put_bytes(&w, cfi->insns + cfi->cie_len, cfi->fde_len);
    end_record(&w, fde);
    put_u(&w, 0, 4); /* the terminator readers stop at */
    return w.n;
}

void wxj_eh_frame_hdr_build(uint64_t at, uint64_t eh, uint64_t fde,
                            uint64_t pc, uint8_t *out)
{
    struct writer w = {out, 0};
    put_u(&w, 1, 1); /* version */
    put_u(&w, PE_PCREL | PE_SDATA4, 1);   /* eh_frame_ptr */
    put_u(&w, PE_UDATA4, 1);              /* fde_count */
    put_u(&w, PE_DATAREL | PE_SDATA4, 1); /* table, from the header */
    put_u(&w, eh - (at + 4), 4);
    put_u(&w, 1, 4);
    put_u(&w, pc - at, 4);
    put_u(&w, fde - at, 4);
}
