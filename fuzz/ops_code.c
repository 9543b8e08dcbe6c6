/* Ops on code: reserve, commit, commit_batch, abort, install, patch,
 * patch_atomic and free, each with valid arguments (the model predicts
 * success) and with stale, forged or garbage ones (EINVAL, and nothing
 * changes). Each runs on the thread its op byte names: commit and abort of
 * another thread's in-place reservation must fail with EPERM on every
 * backend, and an op that would write a page another thread holds open
 * (toggle: it would wait for that thread, and no op comes to release it)
 * is left out. Under failure injection any errno is accepted as long as
 * nothing changed. */
#include "fuzz.h"

static const wxjit_reservation zero_res;

void op_reserve(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    bool size_ok, align_ok;
    size_t size = pick_size(in, hi >= 0 ? &heaps[hi] : NULL, &size_ok);
    size_t align = pick_align(in, &align_ok);
    unsigned fsel = u8(in) % 8;
    unsigned flags = fsel < 5   ? 0
                     : fsel < 7 ? WXJIT_RESERVE_IN_PLACE
                                : 1u << (1 + u8(in) % 31);
    bool null_out = u8(in) % 32 == 31;
    struct mres *m = res_slot();
    bool valid = hi >= 0 && size_ok && align_ok && !null_out &&
                 !(flags & ~(unsigned)WXJIT_RESERVE_IN_PLACE);
    if (valid && !m)
        return;
    wxjit_reservation r;
    memset(&r, 0, sizeof(r));
    if (!valid) {
        REFUSED(h, hi,
                wxjit_reserve(h, size, align, flags, null_out ? NULL : &r));
        return;
    }
    wxjit_stats before;
    stats_before(hi, &before);
    int err = wxjit_reserve(h, size, align, flags, &r);
    if (injected(hi, &before, err, "reserve")) {
        FUZZ_CHECK(!memcmp(&r, &zero_res, sizeof(r)),
                   "out-parameter written on failure");
        return;
    }
    if (err == ENOMEM) {
        check_enomem(hi, size);
        return;
    }
    EXPECT(err, 0);
    TRACE("reserve %zu align %zu flags %#x: %p\n", size, align, flags, r.exec);
    size_t a = align > WXJ_GRANULE ? align : WXJ_GRANULE;
    FUZZ_CHECK(r.size == size && (uintptr_t)r.exec % a == 0 &&
                   chunk_of(hi, r.exec),
               "reservation %p size %zu for %zu at align %zu", r.exec,
               r.size, size, align);
    bool in_place = flags & WXJIT_RESERVE_IN_PLACE;
    if (in_place && heaps[hi].backend == WXJIT_BACKEND_TOGGLE)
        FUZZ_CHECK(r.write == r.exec, "toggle in place: write %p exec %p",
                   r.write, r.exec);
    else
        FUZZ_CHECK(r.write != r.exec, "write view is the executable page");
    /* Never on pages another open in-place reservation holds: code
     * committed there could not run when its commit returns. */
    FUZZ_CHECK(!held_pages(hi, r.exec, size, NULL),
               "new reservation %p on a page held writable", r.exec);
    /* Nor, on any backend, on a page of this thread's own: its commit
     * there would be refused (EDEADLK). */
    FUZZ_CHECK(!on_open_in_place_of(hi, r.exec, size, NULL, cur) &&
                   !own_window_pages(hi, r.exec, size),
               "new reservation %p on a page of this thread's open "
               "in-place reservation or window",
               r.exec);
    check_no_overlap(hi, r.exec, granules(size), "new reservation", NULL);
    struct code code;
    make_code(in, size, &code);
    memcpy(r.write, code.bytes, size);
    *m = (struct mres){true,       hi,          cur,           r,
                       in_place,   granules(size), code.bytes, code.code_len,
                       code.imm_at, code.value};
}

/* Whether the current thread may close m: an in-place reservation is its
 * owner's alone. *skip: the model cannot run the call (known defect 9). */
static int owner_rule(const struct mres *m, bool *skip)
{
    *skip = false;
    if (!m->in_place || m->owner == cur)
        return 0;
    if (FUZZ_KNOWN_DEFECT_9 && heaps[m->heap].backend == WXJIT_BACKEND_DUALMAP)
        *skip = true;
    return EPERM;
}

void op_commit(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    wxjit_reservation tmp, *r;
    struct mres *m;
    r = pick_res(in, &tmp, &m);
    unsigned usel = u8(in) % 8;
    size_t size = r ? r->size : 0;
    size_t used = usel == 0   ? 0
                  : usel == 1 ? size + 1
                  : usel == 2 ? size
                  : usel == 3 && m && m->code_len ? m->code_len
                  : size      ? 1 + u16(in) % size
                              : 1;
    if (!m || hi != m->heap || used == 0 || used > size) {
        REFUSED(h, hi, wxjit_commit(h, r, used));
        return;
    }
    wxjit_reservation copy = *r;
    wxjit_stats before;
    bool skip;
    int rule = owner_rule(m, &skip);
    if (skip)
        return;
    /* New code on the page of the committing thread's own in-place
     * reservation or window: refused on every backend, the reservation
     * stays open. */
    if (!rule && !m->in_place &&
        (on_open_in_place_of(hi, r->exec, used, m, cur) ||
         own_window_pages(hi, r->exec, used)))
        rule = EDEADLK;
    if (!rule && !m->in_place)
        rule = wait_rule(held_by_other(hi, r->exec, used));
    if (rule == WAITS)
        return;
    stats_before(hi, &before);
    TRACE("commit %p used %zu (reserved by thread %d)\n", r->exec, used,
          m->owner);
    int err = wxjit_commit(h, r, used);
    if (rule) {
        EXPECT(err, rule);
        check_unchanged(hi, &before, err, "refused commit");
    }
    if (rule || injected(hi, &before, err, "commit")) {
        FUZZ_CHECK(!memcmp(r, &copy, sizeof(copy)),
                   "failed commit changed the reservation");
        return;
    }
    EXPECT(err, 0);
    FUZZ_CHECK(!memcmp(r, &zero_res, sizeof(zero_res)),
               "reservation not cleared");
    m->r = copy; /* remembered as a stale copy */
    struct mres keep = *m;
    m->bytes = NULL;
    drop_res(m); /* first: its space is the function's now */
    add_func(hi, copy.exec, keep.bytes, used, keep.code_len, keep.imm_at,
             keep.value);
    free(keep.bytes);
}

static void abort_here(void *p)
{
    struct mres *m = p;
    wxjit_reservation copy = m->r;
    TRACE("abort %p\n", m->r.exec);
    EXPECT(wxjit_abort(heaps[m->heap].h, &m->r), 0);
    FUZZ_CHECK(!memcmp(&m->r, &zero_res, sizeof(zero_res)),
               "reservation not cleared");
    m->r = copy;
    drop_res(m);
}

void abort_open(struct mres *m)
{
    thread_call(m->in_place ? m->owner : cur, abort_here, m);
}

void op_abort(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    wxjit_reservation tmp, *r;
    struct mres *m;
    r = pick_res(in, &tmp, &m);
    if (!m || hi != m->heap) {
        REFUSED(h, hi, wxjit_abort(h, r));
        return;
    }
    bool skip;
    int rule = owner_rule(m, &skip);
    if (skip)
        return;
    if (rule) {
        wxjit_reservation copy = *r;
        wxjit_stats before;
        stats_before(hi, &before);
        EXPECT(wxjit_abort(h, r), EPERM);
        check_unchanged(hi, &before, EPERM, "abort of another's in-place");
        FUZZ_CHECK(!memcmp(r, &copy, sizeof(copy)),
                   "failed abort changed the reservation");
        return;
    }
    abort_here(m);
}

/* Several open reservations (some forged or repeated) committed at once.
 * The library checks every used[] first, then claims in order: the first
 * bad claim decides the error. */
void op_commit_batch(struct input *in)
{
    enum { MAX_BATCH = 4 };
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    size_t count = 1 + u8(in) % MAX_BATCH;
    wxjit_reservation arr[MAX_BATCH], copy[MAX_BATCH];
    struct mres *ms[MAX_BATCH];
    size_t used[MAX_BATCH];
    int want = 0;
    bool skip = false;
    uint8_t *lo = NULL, *hi_end = NULL;
    for (size_t i = 0; i < count; i++) {
        wxjit_reservation tmp, *r = pick_res(in, &tmp, &ms[i]);
        arr[i] = r ? *r : zero_res;
        unsigned usel = u8(in) % 8;
        used[i] = usel == 0   ? 0
                  : usel == 1 ? arr[i].size + 1
                  : usel < 5 || !arr[i].size ? arr[i].size
                              : 1 + u16(in) % arr[i].size;
    }
    for (size_t i = 0; i < count; i++)
        if (used[i] == 0 || used[i] > arr[i].size)
            want = EINVAL;
    for (size_t i = 0; i < count && !want; i++) {
        struct mres *m = ms[i];
        bool again = false;
        for (size_t j = 0; j < i; j++)
            again |= ms[j] == m;
        if (!m || m->heap != hi || again) {
            want = EINVAL;
            break;
        }
        bool s;
        want = owner_rule(m, &s);
        skip |= s;

        if (!m->in_place && (!lo || (uint8_t *)arr[i].exec < lo))
            lo = arr[i].exec;
        if (!m->in_place && (uint8_t *)arr[i].exec + used[i] > hi_end)
            hi_end = (uint8_t *)arr[i].exec + used[i];
    }
    /* New code on a page of the thread's own in-place window (one not in
     * the batch, whose in-place items close first): EDEADLK. */
    for (size_t i = 0; i < count && !want; i++)
        for (int k = 0; k < MAX_RES && !ms[i]->in_place; k++) {
            const struct mres *o = &res[k];
            bool in_batch = false;
            for (size_t j = 0; j < count; j++)
                in_batch |= ms[j] == o;
            if (o->used && o->heap == hi && o->in_place && o->owner == cur &&
                !in_batch &&
                on_open_in_place_of(hi, arr[i].exec, used[i], NULL, cur) &&
                (uintptr_t)o->r.exec / page <=
                    ((uintptr_t)arr[i].exec + used[i] - 1) / page &&
                (uintptr_t)arr[i].exec / page <=
                    ((uintptr_t)o->r.exec + o->r.size - 1) / page)
                want = EDEADLK;
        }
    for (size_t i = 0; i < count && !want; i++)
        if (!ms[i]->in_place && own_window_pages(hi, arr[i].exec, used[i]))
            want = EDEADLK;
    /* Runs of adjacent pages are written through one window: the pages
     * between the items must not be held by another thread either (a
     * holder's EDEADLK there comes after the runs before it committed). */
    if (skip || (!want && lo && held_by_other(hi, lo, hi_end - lo)))
        return;
    memcpy(copy, arr, sizeof(arr));
    wxjit_stats before;
    stats_before(hi, &before);
    TRACE("commit_batch of %zu\n", count);
    int err = wxjit_commit_batch(h, arr, used, count);
    if (want) {
        EXPECT(err, want);
        check_unchanged(hi, &before, err, "refused commit_batch");
    } else if (!injected(hi, &before, err, "commit_batch")) {
        EXPECT(err, 0);
    }
    for (size_t i = 0; i < count; i++) {
        if (want || arr[i].exec) {
            FUZZ_CHECK(!memcmp(&arr[i], &copy[i], sizeof(copy[i])),
                       "batch item %zu changed but not committed", i);
            continue;
        }
        FUZZ_CHECK(!memcmp(&arr[i], &zero_res, sizeof(zero_res)),
                   "batch item %zu not cleared", i);
        struct mres keep = *ms[i];
        ms[i]->bytes = NULL;
        drop_res(ms[i]);
        add_func(hi, copy[i].exec, keep.bytes, used[i], keep.code_len,
                 keep.imm_at, keep.value);
        free(keep.bytes);
    }
}

void op_install(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    bool size_ok, align_ok;
    size_t size = pick_size(in, hi >= 0 ? &heaps[hi] : NULL, &size_ok);
    size_t align = pick_align(in, &align_ok);
    unsigned nulls = u8(in) % 32;
    bool valid = hi >= 0 && size_ok && align_ok && nulls < 30;
    void *exec = NULL;
    if (!valid) {
        uint8_t small[16] = {0};
        /* A bad size is refused before the code is read. */
        REFUSED(h, hi,
                wxjit_install(h, nulls == 30 ? NULL : small, size, align,
                              nulls == 31 ? NULL : &exec));
        FUZZ_CHECK(exec == NULL, "out-parameter written on failure");
        return;
    }
    if (!func_slot())
        return;
    struct code code;
    make_code(in, size, &code);
    wxjit_stats before;
    stats_before(hi, &before);
    int err = wxjit_install(h, code.bytes, size, align, &exec);
    if (err && (injected(hi, &before, err, "install") || err == ENOMEM)) {
        if (err == ENOMEM && !injecting)
            check_enomem(hi, size);
        FUZZ_CHECK(exec == NULL, "out-parameter written on failure");
        free(code.bytes);
        return;
    }
    EXPECT(err, 0);
    TRACE("install %zu align %zu: %p\n", size, align, exec);
    size_t a = align > WXJ_GRANULE ? align : WXJ_GRANULE;
    FUZZ_CHECK((uintptr_t)exec % a == 0 && chunk_of(hi, exec),
               "install at %p, align %zu", exec, align);
    FUZZ_CHECK(!held_pages(hi, exec, size, NULL),
               "installed %p on a page held writable", exec);
    FUZZ_CHECK(!on_open_in_place_of(hi, exec, size, NULL, cur) &&
                   !own_window_pages(hi, exec, size),
               "installed %p on a page of this thread's open in-place "
               "reservation or window",
               exec);
    add_func(hi, exec, code.bytes, size, code.code_len, code.imm_at,
             code.value);
    free(code.bytes);
}

void patch_bytes(struct input *in, const struct mfunc *f, size_t off,
                 size_t len, bool keep_imm, uint8_t *out)
{
    for (size_t i = 0; i < len; i++) {
        size_t at = off + i;
        bool imm = f->callable && at >= f->imm_at && at < f->imm_at + 4;
        bool after = !f->callable || at >= f->code_end;
        uint8_t b = (uint8_t)u8(in);
        out[i] = (imm && !keep_imm) || after ? b : f->bytes[at];
    }
}

void apply_patch(struct mfunc *f, size_t off, const uint8_t *b, size_t len)
{
    memcpy(f->bytes + off, b, len);
    if (f->callable)
        memcpy(&f->value, f->bytes + f->imm_at, 4);
}

/* procmem: a patch registers its bytes against windows (their close
 * would write back what they saw): the caller's own over them is EBUSY,
 * another's is waited for. Toggle: pages another thread holds. */
static int patch_rule(int hi, const uint8_t *addr, size_t len)
{
    if (heaps[hi].backend != WXJIT_BACKEND_PROCMEM)
        return wait_rule(held_by_other(hi, addr, len));
    if (own_window_over(hi, addr, len))
        return EBUSY;
    return wait_rule(other_window_over(hi, addr, len));
}

/* A patch that is not inside one live function: EINVAL, but on procmem
 * the registration comes first (before the range is checked) once addr
 * lies in a block of the heap (live code or an open reservation). */
static int refused_patch_rule(int hi, const uint8_t *addr, size_t len)
{
    if (hi < 0 || heaps[hi].backend != WXJIT_BACKEND_PROCMEM)
        return EINVAL;
    bool in_block = false;
    for (int i = 0; i < MAX_FUNCS && !in_block; i++)
        in_block = funcs[i].used && funcs[i].heap == hi &&
                   addr >= funcs[i].exec &&
                   addr < funcs[i].exec + funcs[i].n * WXJ_GRANULE;
    for (int i = 0; i < MAX_RES && !in_block; i++)
        in_block = res[i].used && res[i].heap == hi &&
                   addr >= (uint8_t *)res[i].r.exec &&
                   addr < (uint8_t *)res[i].r.exec + res[i].n * WXJ_GRANULE;
    int rule = in_block ? patch_rule(hi, addr, len) : 0;
    return rule ? rule : EINVAL;
}

/* A patch target: mostly inside a live function (possibly running past
 * its end), sometimes just before one, in a reservation or freed code.
 * Whether it is valid is decided by the model afterwards. */
static uint8_t *pick_patch(struct input *in, size_t *len, size_t width,
                           size_t max_len)
{
    unsigned sel = u8(in);
    struct mfunc *f = pick_func(sel / 8);
    struct mres *m = pick_open(sel / 8);
    if (!f || sel % 8 == 7) {
        *len = width ? width : 1 + sel % 8;
        if (m && sel % 2)
            return m->r.exec;
        return n_stale_ptr ? stale_ptrs[sel % MAX_STALE] : NULL;
    }
    size_t extent = f->n * WXJ_GRANULE;
    size_t off = u16(in) % extent;
    if (width)
        off -= off % width;
    *len = width ? width : 1 + u16(in) % (extent - off);
    if (sel % 8 == 5 && !width)
        *len = extent - off + 1 + u8(in) % 16; /* past the end */
    if (*len > max_len)
        *len = max_len;
    if (sel % 8 == 6) /* just before it */
        return (uint8_t *)((uintptr_t)f->exec - width - u8(in) % 16);
    return f->exec + off;
}

void op_patch(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    uint8_t buf[WXJ_GRANULE * 8];
    size_t len;
    uint8_t *addr = pick_patch(in, &len, 0, sizeof(buf));
    unsigned mode = u8(in) % 16;
    struct mfunc *f = hi >= 0 ? func_holding(hi, addr, len) : NULL;
    if (!f || mode >= 13) {
        int want = mode >= 13 ? EINVAL : refused_patch_rule(hi, addr, len);
        if (want == WAITS)
            return;
        memset(buf, TRAP, sizeof(buf));
        REFUSED_WITH(hi, want,
                     wxjit_patch(h, mode == 15 ? NULL : addr,
                                 mode == 14 ? NULL : buf,
                                 mode == 13 ? 0 : len));
        return;
    }
    int rule = patch_rule(hi, addr, len);
    if (rule == WAITS)
        return;
    if (rule) {
        REFUSED_WITH(hi, rule, wxjit_patch(h, addr, f->bytes, len));
        return;
    }
    size_t off = (size_t)(addr - f->exec);
    /* The immediate of a published function stays: a plain patch is not
     * atomic for its executors. */
    patch_bytes(in, f, off, len, !share_quiet(f), buf);
    wxjit_stats before;
    stats_before(hi, &before);
    int err = wxjit_patch(h, addr, buf, len);
    if (injected(hi, &before, err, "patch"))
        return;
    EXPECT(err, 0);
    apply_patch(f, off, buf, len);
}

void op_patch_atomic(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    unsigned wsel = u8(in) % 8;
    size_t width = wsel < 4 ? (size_t)1 << wsel : wsel == 4 ? 3 : 8;
    size_t len;
    uint8_t *addr = pick_patch(in, &len, width == 3 ? 4 : width, 8);
    if (u8(in) % 8 == 7)
        addr = (uint8_t *)((uintptr_t)addr + 1); /* misaligned, unless 1 */
    struct mfunc *f = hi >= 0 && width != 3 && (uintptr_t)addr % width == 0
                          ? func_holding(hi, addr, width)
                          : NULL;
    if (!f) {
        bool early = width == 3 || (uintptr_t)addr % width || !addr;
        int want = early ? EINVAL : refused_patch_rule(hi, addr, width);
        if (want == WAITS)
            return;
        REFUSED_WITH(hi, want,
                     wxjit_patch_atomic(h, addr, 0xcccccccccccccccc, width));
        return;
    }
    int rule = patch_rule(hi, addr, width);
    if (rule == WAITS)
        return;
    if (rule) {
        REFUSED_WITH(hi, rule, wxjit_patch_atomic(h, addr, 0, width));
        return;
    }
    uint8_t b[8] = {0};
    size_t off = (size_t)(addr - f->exec);
    patch_bytes(in, f, off, width, false, b);
    uint64_t v = 0;
    memcpy(&v, b, width); /* little-endian host */
    uint8_t old_bytes[8];
    int32_t old_value = f->value;
    memcpy(old_bytes, f->bytes + off, width); /* f->bytes changes below */
    apply_patch(f, off, b, width);
    share_patched(f); /* executors accept the new value from now on */
    wxjit_stats before;
    stats_before(hi, &before);
    int err = wxjit_patch_atomic(h, addr, v, width);
    bool lost = heaps[hi].atomic_refused && err == ENOTSUP;
    if (lost)
        check_unchanged(hi, &before, err, "patch_atomic (no atomic stores)");
    if (lost || injected(hi, &before, err, "patch_atomic")) {
        memcpy(f->bytes + off, old_bytes, width);
        f->value = old_value;
        share_patched(f);
        return;
    }
    EXPECT(err, 0);
}

void op_free(struct input *in)
{
    int hi;
    wxjit_heap *h = pick_heap(in, &hi);
    unsigned sel = u8(in);
    struct mfunc *f = pick_func(sel / 16);
    struct mres *m = pick_open(sel / 16);
    int local;
    uint8_t *p;
    switch (sel % 16) {
    case 8: p = f ? f->exec + WXJ_GRANULE * (1 + u8(in) % 4) : NULL; break;
    case 9: p = f ? f->exec + 1 + u8(in) % 15 : NULL; break;
    case 10: p = n_stale_ptr ? stale_ptrs[u8(in) % MAX_STALE] : NULL; break;
    case 11: p = m ? m->r.exec : NULL; break;
    case 12: {
        struct wxj_chunk *c = hi >= 0 ? heaps[hi].h->chunks : NULL;
        p = c ? c->base + (u16(in) % (c->size / WXJ_GRANULE)) * WXJ_GRANULE
              : NULL;
        break;
    }
    case 13: p = (uint8_t *)&local; break;
    case 14: p = NULL; break;
    default: p = f ? f->exec : NULL; break;
    }
    struct mfunc *target = hi >= 0 ? func_at(hi, p) : NULL;
    if (!target) {
        REFUSED(h, hi, wxjit_free(h, p));
        return;
    }
    if (!share_quiet(target))
        return;
    size_t len = target->n * WXJ_GRANULE;
    int rule = own_window_over(hi, p, len)
                   ? EDEADLK
                   : wait_rule(other_window_over(hi, p, len) ||
                               (!heaps[hi].defer && held_by_other(hi, p, len)));
    if (rule == WAITS)
        return;
    if (rule) {
        REFUSED_WITH(hi, rule, wxjit_free(h, p));
        return;
    }
    TRACE("free %p\n", (void *)p);
    wxjit_stats before;
    stats_before(hi, &before);
    int err = wxjit_free(h, p);
    if (injected(hi, &before, err, "free"))
        return;
    EXPECT(err, 0);
    heaps[hi].frees++;
    remember_ptr(p);
    free_func(target);
}
