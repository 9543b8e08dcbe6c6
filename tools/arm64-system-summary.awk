# The verdict of tools/check-arm64-system.sh, read from the guest's console
# (tools/guest-init.c's "wxsys:" lines) against the list of tests ctest
# knows (tools/guest-manifest.cmake's "NAME LABEL" lines, read first):
# passed/skipped/failed per label (backend), the slowest tests, every
# SKIPPED line with its reason, the output of every failed test. Exits 1
# on any failed, timed-out or missing test, a skip that gave no reason, or
# a guest that did not finish. Variables: wall (seconds qemu ran),
# qemu_rc (its exit status).
FNR == NR {
    label[$1] = $2
    order[++ntests] = $1
    if (!($2 in seen_label)) {
        seen_label[$2] = 1
        labels[++nlabels] = $2
    }
    next
}
/^wxsys: kernel / { kernel = $3 " " $4; cpus = $6; boot = $8; next }
/^wxsys: done / { done = $6; next }
/^wxsys: error / { errors = errors "\n  " $0; next }
/^wxsys: result / {
    verdict[$3] = $4
    detail[$3] = $5
    secs[$3] = $6
    next
}
/^wxsys: out / {
    name = $3
    line = $0
    sub(/^wxsys: out [^|]*\| ?/, "", line)
    out[name] = out[name] "\n    " line
    if (line ~ /SKIPPED/) {
        gsub(/^ +/, "", line)
        if (!((name, line) in skip_seen)) {
            skip_seen[name, line] = 1
            skips = skips "\n  " name ": " line
        }
        gave_reason[name] = 1
    }
}
END {
    status = 0
    for (i = 1; i <= ntests; i++) {
        t = order[i]
        v = t in verdict ? verdict[t] : "missing"
        if (v == "skipped" && !(t in gave_reason))
            v = "skipped-without-reason"
        if (v != "passed" && v != "skipped") {
            failed[label[t]]++
            bad = bad "\n  " t ": " v " " detail[t]
            failed_out = failed_out "\n--- " t ": " v " " detail[t] out[t]
            status = 1
        } else
            count[label[t], v]++
    }
    if (failed_out != "")
        print "\n== output of the failed tests" failed_out
    print "\n== check-arm64-system summary: Linux " kernel ", " cpus \
        " vCPUs (qemu-system-aarch64 -M virt -cpu max, TCG)"
    printf "boot to init %s s; the tests %s s in the guest; qemu %d s in all\n",
        boot, done == "" ? "(unfinished)" : done, wall
    printf "%-12s %6s %7s %6s\n", "backend", "passed", "skipped", "failed"
    for (i = 1; i <= nlabels; i++) {
        l = labels[i]
        printf "%-12s %6d %7d %6d\n", l == "-" ? "no-backend" : l,
            count[l, "passed"], count[l, "skipped"], failed[l]
    }
    # The slowest ten, for the time budget (README: check-arm64-system).
    n = 0
    for (t in secs)
        slow[++n] = sprintf("%9.1f %s", secs[t], t)
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && slow[j] + 0 > slow[j - 1] + 0; j--) {
            tmp = slow[j]; slow[j] = slow[j - 1]; slow[j - 1] = tmp
        }
    print "slowest tests (seconds):"
    for (i = 1; i <= n && i <= 10; i++)
        print "  " slow[i]
    print "SKIPPED checks and tests (with their reasons):" \
        (skips == "" ? " none" : skips)
    if (errors != "") {
        print "guest init errors:" errors
        status = 1
    }
    if (done == "" || qemu_rc != 0) {
        print "the guest did not finish (qemu exit status " qemu_rc ")"
        status = 1
    }
    if (bad != "")
        print "FAILED:" bad
    if (status)
        print "check-arm64-system: FAILED"
    else
        print "check-arm64-system: all passed (or skipped with a reason)"
    exit status
}
