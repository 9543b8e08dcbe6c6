/* Reading the fuzzer's byte stream: integers (zeros past the end), and the
 * classes of sizes, alignments and code bytes the ops draw from it. */
#include "fuzz.h"

#define NOP 0x90
#define X86_MOV_EAX 0xb8
#define X86_RET 0xc3
#define CODE_LEN(k) ((k) + 6) /* k nops; mov eax, imm32; ret */

unsigned u8(struct input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

unsigned u16(struct input *in)
{
    unsigned lo = u8(in);
    return lo | u8(in) << 8;
}

uint32_t u32(struct input *in)
{
    uint32_t lo = u16(in);
    return lo | (uint32_t)u16(in) << 16;
}

/* Bytes nobody reads as instructions (padding after ret), from a seed. */
static void fill_pseudo(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
        p[i] = (uint8_t)x;
    }
}

/* size bytes: k nops, mov eax, imm32, ret, then padding from a seed. */
void make_code(struct input *in, size_t size, struct code *out)
{
    size_t k = u8(in) % 16;
    out->value = (int32_t)u32(in);
    out->bytes = malloc(size ? size : 1);
    FUZZ_CHECK(out->bytes, "malloc %zu", size);
    out->len = size;
    uint8_t full[CODE_LEN(15)];
    memset(full, NOP, k);
    full[k] = X86_MOV_EAX;
    memcpy(full + k + 1, &out->value, 4);
    full[k + 5] = X86_RET;
    size_t n = CODE_LEN(k) < size ? CODE_LEN(k) : size;
    memcpy(out->bytes, full, n);
    fill_pseudo(out->bytes + n, size - n, u8(in));
    out->code_len = CODE_LEN(k) <= size ? CODE_LEN(k) : 0;
    out->imm_at = k + 1;
}

/* Size and alignment classes; *valid says whether check_request accepts. */
size_t pick_size(struct input *in, const struct mheap *m, bool *valid)
{
    size_t chunk = m ? round_page(m->chunk_size) : ((size_t)4 << 20);
    size_t cap = chunk < MAX_CODE ? chunk : MAX_CODE;
    unsigned sel = u8(in) % 16;
    size_t size;
    switch (sel) {
    case 0: size = 0; break;
    case 1: size = chunk + 1; break;
    case 2: size = SIZE_MAX; break;
    case 3: size = cap; break;
    case 4: size = page - 8 + u8(in) % 16; break;
    case 5: size = 1 + u16(in) % cap; break;
    /* Just over a page, in granules: a block that straddles a page
     * boundary whatever granule it starts on. */
    case 15: size = page + WXJ_GRANULE * (u8(in) % 8) + 1 + u8(in) % 15; break;
    default: size = 1 + u8(in) % 96; break;
    }
    if (size > chunk && sel == 15)
        size = chunk;
    *valid = size != 0 && size <= chunk;
    return size;
}

size_t pick_align(struct input *in, bool *valid)
{
    unsigned sel = u8(in);
    size_t align;
    switch (sel % 8) {
    case 1: align = (size_t)16 << (sel / 8 % 9); break; /* 16 .. 4 KiB */
    case 2: align = 24; break;
    case 3: align = page * 2; break;
    case 4: align = (size_t)1 << (sel / 8 % 4); break; /* 1 .. 8 */
    default: align = 0; break;
    }
    *valid = (align & (align - 1)) == 0 && align <= page;
    return align;
}
