/* Shared test helpers, one header per job; every test includes this one:
 * - wxtest_core.h: loud assertions, the checking tools and skips, the W^X
 *   policy, heaps and their statistics, choosing scenarios;
 * - wxtest_maps.h: pages and /proc/self/maps;
 * - wxtest_child.h: death tests and hangs, in child processes;
 * - wxtest_futex.h: threads asleep in the fault handler;
 * - wxtest_emu.h: what user-mode emulation cannot run, probed;
 * - wxtest_code.h: small functions installed and called. */
#ifndef WXTEST_H
#define WXTEST_H

#include "wxtest_child.h"
#include "wxtest_code.h"
#include "wxtest_core.h"
#include "wxtest_emu.h"
#include "wxtest_futex.h"
#include "wxtest_maps.h"

#endif /* WXTEST_H */
