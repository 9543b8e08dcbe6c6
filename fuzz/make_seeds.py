#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/fuzz_api.c into fuzz/corpus/: short
sequences that reach each operation with valid arguments, so the fuzzer
starts from inputs that do something. Run from anywhere; the files are
small and deterministic, and kept in the repository."""
import os
import struct

OPS = ['create', 'destroy', 'reserve', 'commit', 'abort', 'install', 'patch',
       'patch_atomic', 'free', 'stats', 'handle_fault', 'handler', 'backend',
       'commit_batch', 'thread_exit', 'fork', 'inject', 'share',
       'window_open', 'window_close']
OP = {name: i for i, name in enumerate(OPS)}
HEAP0 = 0  # heap selector: the first live heap


def on(t, data):
    """The same op run on thread t (0 main, 1-4 workers): the op byte
    names its thread as op + len(OPS) * t."""
    return bytes([data[0] + len(OPS) * t]) + data[1:]


def code(k=0, value=42, seed=7):
    """make_code(): nops, imm32 value, padding seed."""
    return bytes([k]) + struct.pack('<i', value) + bytes([seed])


def small(n):
    """pick_size(): class 6+, 1 + n % 96 bytes."""
    return bytes([6, (n - 1) % 96])


def create(backend=0, chunk_pages=None, cap_pages=None, flags=0):
    c = 0 if chunk_pages is None else 1 + 4 * (chunk_pages - 1)
    m = 0 if cap_pages is None else 1 + 2 * cap_pages
    return bytes([OP['create'], backend, c, m, flags])


def install(n=32, value=42, k=0, align=0):
    return bytes([OP['install'], HEAP0]) + small(n) + bytes([align, 0]) + \
        code(k, value)


def reserve(n=48, in_place=False, value=7, k=0, size=None):
    return bytes([OP['reserve'], HEAP0]) + (size or small(n)) + \
        bytes([0, 5 if in_place else 0, 0]) + code(k, value)


def over_page(granules=1, extra=1):
    """pick_size() class 15: a page + 16 * granules + extra bytes, a block
    that spans two pages."""
    return bytes([15, granules, extra - 1])


def commit(sel=0, used_class=2):
    return bytes([OP['commit'], HEAP0, sel, used_class])


def abort(sel=0):
    return bytes([OP['abort'], HEAP0, sel])


def free(sel=0):
    return bytes([OP['free'], HEAP0, sel])


def patch(sel=0, off=1, length=4, data=b'\x11\x22\x33\x44'):
    return bytes([OP['patch'], HEAP0, sel]) + struct.pack('<HH', off, length - 1) + \
        bytes([0]) + data


def patch_atomic(width_sel=2, sel=0, off=4, data=b'\x55\x66\x77\x88'):
    return bytes([OP['patch_atomic'], HEAP0, width_sel, sel]) + \
        struct.pack('<H', off) + bytes([0]) + data


def commit_batch(sels_used):
    out = bytes([OP['commit_batch'], HEAP0, len(sels_used) - 1])
    for sel, usel in sels_used:
        out += bytes([sel, usel])
    return out


def thread_exit(worker):
    return bytes([OP['thread_exit'], worker - 1])


def inject(kind=0, nth=1, many=False, err=0):
    """kind: 0 mmap, 1 mprotect, 2 memfd/shm/tmpfile, 3 ftruncate,
    4 pwrite; err: ENOMEM EACCES EMFILE EAGAIN ENOSPC EIO."""
    return bytes([OP['inject'], kind + 5 * (nth - 1) + (20 if many else 0),
                  err])


def window(func=0, kind=0, off=0, length=1, at=0, wlen=4,
           data=b'\x11\x22\x33\x44'):
    """Opens a window over live function func (the func-th used slot;
    kind 0: the whole function; 1-4: [off, off + length)), then writes
    data at `at` in it (wlen bytes)."""
    rng = struct.pack('<HH', off, length - 1) if kind else b''
    return bytes([OP['window_open'], HEAP0, 8 * func + kind]) + rng + \
        bytes([0]) + struct.pack('<HH', at, wlen - 1) + data


def window_close(win=0, how=0, at=0, wlen=1, data=b'\x55'):
    """Window win (the win-th open slot); how 0-5: write, then close (by
    the current thread); 6-8: only write; 9-12: a wrong range; 13: in
    its own heap; 14: the last one closed."""
    out = bytes([OP['window_close'], HEAP0, win * 16 + how])
    if how < 9 or how == 15:
        out += struct.pack('<HH', at, wlen - 1) + data
    return out


SEEDS = {
    'install-call-free': install(value=1) + install(value=2, k=3) +
    install(value=3, align=1) + free(0) + free(8) + bytes([OP['stats'], 0, 0]),
    'reserve-commit': reserve(64) + commit(0, 2) + reserve(200, value=9) +
    commit(0, 3),
    'in-place': install(value=5) + reserve(40, in_place=True) + commit(0, 2) +
    reserve(40, in_place=True, value=6) + abort(0),
    'patch': install(value=10, k=3) + patch(0, 4, 4) + patch_atomic(2, 0, 4),
    'small-chunks-cap': create(4, 2, 4) + create(5, 1, 3) +
    b''.join(install(value=i, n=90) for i in range(40)),
    'garbage': install() + free(10) + free(12) + free(13) + free(8) +
    commit(14, 0) + abort(12) + bytes([OP['destroy'], 6]),
    'faults': install(value=3) + reserve(32, in_place=True) +
    bytes([OP['handle_fault'], 0, 0, 0, 0, 0]) +
    bytes([OP['handle_fault'], 0, 0, 0, 0, 0]) +
    bytes([OP['handle_fault'], 0, 3, 5, 2, 0]) + bytes([OP['handler']]),
    'heaps': create(4) + create(5, 8, None, 1) + create(6, None, None, 2) +
    create(7) + bytes([OP['destroy'], 0, OP['backend'], 6, 0]) + install(),
    'churn': b''.join(install(value=i, n=16 + 8 * (i % 9)) + free(i % 3 * 16)
                      for i in range(24)),
    # Multi-threaded: each worker installs into its own pool, all call.
    'threads-install': b''.join(on(t, install(value=t, n=24 + 8 * t))
                                for t in range(5)) +
    on(2, free(0)) + on(3, install(value=9)),
    # A worker reserves and exits; another thread adopts its pool and
    # commits the orphaned reservation; a third installs.
    'thread-exit-adopt': on(1, reserve(200, value=5)) + thread_exit(1) +
    on(2, reserve(64, value=6)) + on(2, abort(0)) + on(2, commit(0, 3)) +
    on(3, install(value=7)) + on(2, install(value=8)),
    # The same with a reservation spanning two pages, committed whole: the
    # adopting thread's tail then starts on the second page.
    'thread-exit-adopt-two-pages': on(1, reserve(size=over_page(), value=5)) +
    thread_exit(1) + on(2, reserve(64, value=6)) + on(2, abort(16)) +
    on(2, commit(0, 2)) + on(3, install(value=7)) + on(2, install(value=8)),
    # In-place ownership: another thread's commit and abort get EPERM.
    'in-place-owner': on(1, reserve(40, in_place=True, value=3)) +
    on(2, commit(0, 2)) + on(3, abort(0)) + on(1, commit(0, 2)),
    'batch': reserve(40, value=1) + reserve(90, value=2) +
    reserve(30, in_place=True, value=3) +
    commit_batch([(0, 2), (16, 2), (32, 3)]),
    'fork': install(value=4) + on(1, install(value=5)) +
    on(2, reserve(40, in_place=True)) + on(1, bytes([OP['fork'], 0])),
    # WXJIT_HEAP_DEFER_TRAP_FILL (flags byte 4) on one-page chunks: frees
    # from several threads leave fills pending; installs reuse that space,
    # a patch and a failed install open windows over it; then a fork.
    'defer-trap-fill': bytes([OP['destroy'], 0]) + create(0, 1, None, 4) +
    b''.join(install(value=i, n=90) for i in range(12)) + free(0) +
    on(1, free(32)) + on(2, free(16)) + install(value=50, n=40) +
    on(1, install(value=51, n=90)) + patch(0) + inject(1, 1) +
    install(value=52, n=60) + on(3, free(48)) + on(3, install(value=53)) +
    on(1, bytes([OP['fork'], 0])),
    'inject': inject(0, 1) + install(value=1) + inject(1, 2, True, 1) +
    install(value=2) + inject(2, 1, False, 2) + reserve(48) +
    inject(1, 1, False, 0) + free(0) + inject(3, 1) + on(1, install()),
    # Concurrent mode: publish a function, patch its immediate
    # atomically (k=3 puts imm32 at offset 4) while others churn.
    'share-patch': install(value=11, k=3) + bytes([OP['share'], 0]) +
    on(1, install(value=12)) + patch_atomic(2, 0, 4) +
    on(2, install(value=13, k=3)) + on(2, bytes([OP['share'], 1])) +
    on(3, free(16)) + on(4, patch_atomic(2, 1, 4)),
    # Windows: a whole function, then its immediate rewritten (k=3 puts
    # imm32 at offset 4) and closed; nested windows on one thread; a free
    # under the thread's own window (EDEADLK); another thread's close and
    # a closed one's (EINVAL); a patch under the thread's own window
    # (EBUSY on procmem).
    'window': install(value=20, k=3) + install(value=21, k=3) +
    window(0, at=4) + window_close(0, 0, 4, 4, b'\x01\x02\x03\x04') +
    window(0, 1, 4, 4, 0, 2, b'\x05\x06') +
    window(0, 1, 8, 2, 0, 1, b'\x00') + free(0) +
    on(1, window_close(0, 0)) + window_close(0, 0) + window_close(1, 0) +
    window_close(0, 14) + window(0, 1, 4, 4) + patch(0, 4, 4),
    # Windows of two threads over different functions of one page, with a
    # published function rewritten under one (concurrent mode: executors
    # wait on toggle); a holder's window over the other's function (its
    # page on toggle) is EDEADLK, so are its free and (toggle) patch
    # there; the threads exit with their windows open.
    'window-threads': install(value=30, k=3) + install(value=31, k=3) +
    bytes([OP['share'], 0]) + window(0, at=4) + on(1, window(1, at=4)) +
    on(1, window(0, 1, 0, 4)) + on(1, free(0)) + on(2, install(value=32)) +
    thread_exit(1) + window_close(0, 6, 4, 4, b'\x09\x08\x07\x06') +
    on(3, window_close(0, 0)) + window_close(0, 0) + on(1, patch(0, 4, 4)),
    # Windows open at a fork (the child closes the forking thread's and
    # finds the other's closed) and at a heap destroy.
    'window-fork-destroy': install(value=40, k=3) + install(value=41, k=3) +
    on(2, window(1, at=4)) + window(0, at=4) + bytes([OP['fork'], 0]) +
    bytes([OP['destroy'], 0]) + on(2, install(value=42)) +
    on(2, window(0, at=4)),
    # Injected failures while opening (toggle's RW flip) and closing
    # (toggle's RX flip, procmem's write).
    'window-inject': install(value=50, k=3) + inject(1, 1) + window(0) +
    window(0, at=4) + inject(1, 1, False, 1) + window_close(0, 0) +
    inject(4, 1, False, 5) + window_close(0, 0) + window_close(0, 0),
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, 'seed-' + name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main()
