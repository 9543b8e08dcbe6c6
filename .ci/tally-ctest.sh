#!/usr/bin/env bash
# Adds up the verdicts of every ctest run in a CI log, and of
# check-arm64-system's run of the same tests in a guest, and prints them as
# one closing line: "CI: N passed, N failed, N skipped".
set -euo pipefail
log=${1:?usage: tally-ctest.sh LOG}
awk '
  /^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+/ {
    failed += $4; total += $NF
  }
  / Test +#[0-9]+: .*\*\*\*Skipped/ { skipped++ }
  # check-arm64-system runs the ctest tests in a guest: one line each
  # (tools/guest-init.c).
  /^wxsys: result / {
    total++
    if ($4 == "skipped") skipped++
    else if ($4 != "passed") failed++
  }
  END {
    if (total == 0) { print "CI: no ctest run found in the log" > "/dev/stderr"; exit 1 }
    printf "CI: %d passed, %d failed, %d skipped\n", total - failed - skipped, failed, skipped
  }' "$log"
