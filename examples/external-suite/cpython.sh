#!/bin/bash
# CPython's own regression suite (`python3 -m test`), run twice with the same arguments:
# once plain, once with libpulp_rs.so in every one of its processes. Prints the counts of
# both runs and the tests that fail only with the runtime (there must be none).
#
#   sudo examples/external-suite/cpython.sh [RUNTIME [REGRTEST ARGUMENTS...]]
#   (RUNTIME: default target/release/libpulp_rs.so; more arguments: test names, -u ...)
#   PYTHON=/path/to/python3  OUT=folder for the logs (default target/external-suite)
#
# LD_PRELOAD is not enough to reach every process: tests start children with an empty or
# scrubbed environment. So each run goes into a private mount namespace whose /etc is an
# overlay; its /etc/ld.so.preload names the runtime (runtime run) or is empty (plain run).
# The two runs differ by that one file, nothing else.
set -u

[ "$(id -u)" = 0 ] || { echo "cpython.sh: run me as root: each run needs 'unshare -m' and 'mount -t overlay'" >&2; exit 64; }
RUNTIME=$(realpath -e "${1:-target/release/libpulp_rs.so}") || { echo "cpython.sh: no runtime ${1:-target/release/libpulp_rs.so} (cargo build --release --workspace)" >&2; exit 64; }
PYTHON=${PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3}
OUT=$(realpath -m "${OUT:-target/external-suite}")
# An overlay on /etc would hide whatever is mounted below it (a container's /etc/hosts...).
[ -z "$(findmnt -n -R -o TARGET /etc | grep -v '^/etc$')" ] || { echo "cpython.sh: something is mounted below /etc; the overlay would hide it" >&2; exit 1; }

# -j2: two workers on a 2-core machine. --rerun: a test that failed is run once more, alone
# and verbose, so a timing flake of a loaded machine does not count as a failure (a
# failure caused by the runtime fails again). -u: every resource that works offline, but
# cpu and largefile, which only add CPU time and multi-GiB files, not processes.
ARGS=(-j2 --timeout 1200 --rerun -u all,-network,-urlfetch,-cpu,-largefile)
# Excluded because they fail or hang in both runs, for reasons that are not ours: none.
ARGS+=("${@:2}")   # more regrtest arguments after RUNTIME: test names, another -u...

# run NAME PRELOAD: the suite in its own mount namespace, /etc/ld.so.preload = PRELOAD.
run() {
    local d=$OUT/$1 start
    rm -rf "$d" && mkdir -p "$d/upper" "$d/work" || exit 1
    printf '%s' "$2" > "$d/upper/ld.so.preload"
    echo "== $1 run: $PYTHON -m test ${ARGS[*]}  (log: $d.log)"
    start=$(date +%s)
    # Inside: mount the overlay, note the namespace (to find the suite's processes from
    # outside) and what a child with an empty environment maps, then become the suite.
    nice -n 5 unshare -m --propagation private sh -c '
        mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc || exit 125
        env -i /bin/cat /proc/self/maps > "$1/empty-env.maps"
        readlink /proc/self/ns/mnt > "$1/mntns"
        shift; exec "$@"' sh "$d" env -u LD_PRELOAD "$PYTHON" -m test "${ARGS[@]}" > "$d.log" 2>&1 &
    local pid=$! rc
    sample "$pid" "$d" &
    wait "$pid"; rc=$?
    echo "$(( $(date +%s) - start ))" > "$d/seconds"
    kill $! 2>/dev/null; wait $!
    echo "   exit status $rc, $(cat "$d/seconds") s"
}

# sample PID DIR: every 10 s, every live process of the suite's mount namespace, and
# whether it maps the runtime; one line a sample in DIR/samples.
sample() {
    local ns p n with without
    until [ -s "$2/mntns" ] || ! kill -0 "$1" 2>/dev/null; do sleep 1; done
    ns=$(cat "$2/mntns" 2>/dev/null) || return
    while sleep 10; kill -0 "$1" 2>/dev/null; do
        n=0 with=0 without=
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
            [ "$(wc -l < "$p/maps" 2>/dev/null)" -gt 0 ] 2>/dev/null || continue   # exited, zombie
            n=$((n + 1))
            if grep -qF "$RUNTIME" "$p/maps" 2>/dev/null; then with=$((with + 1))
            else without+=" ${p#/proc/}:$(cat "$p/comm" 2>/dev/null)"; fi
        done
        echo "$(date +%T) processes=$n with_runtime=$with without=[${without# }]"
    done > "$2/samples"
}

# The summary regrtest prints last (after its final "== Tests result" line).
summary() { tac "$OUT/$1.log" | sed '/^== Tests result/q' | tac; }
failed()  { summary "$1" | awk '/ failed:$/ {f=1; next} f && /^    / {for (i = 1; i <= NF; i++) print $i; next} {f=0}' | sort; }
rerun()   { summary "$1" | awk '/ re-run tests?:$/ {f=1; next} f && /^    / {for (i = 1; i <= NF; i++) print $i; next} {f=0}' | sort; }
# field RUN LINE NAME: NAME=value of regrtest's "Total tests:" or "Total test files:" line.
field()   { summary "$1" | grep "^$2:" | tr ' ' '\n' | sed -n "s/^$3=//p" | sed 's/,//g; s|/.*||' | grep . || echo 0; }
ok()      { summary "$1" | grep -o '[0-9]* tests\? OK' | grep -o '^[0-9]*' || echo 0; }

run plain ""
run runtime "$RUNTIME"

status=0
grep -qF libpulp_rs "$OUT/plain/empty-env.maps" && { echo "plain run: a child maps the runtime"; status=1; }
grep -qF "$RUNTIME" "$OUT/runtime/empty-env.maps" || { echo "runtime run: a child started with an empty environment does not map $RUNTIME"; status=1; }

printf '\n%-32s %10s %10s\n' "" plain runtime
row() { printf '%-32s %10s %10s\n' "$1" "$2" "$3"; }
row "test files run"           "$(field plain 'Total test files' run)"   "$(field runtime 'Total test files' run)"
row "  passed (OK)"            "$(ok plain)"                             "$(ok runtime)"
row "  failed"                 "$(failed plain | wc -l)"                 "$(failed runtime | wc -l)"
row "  skipped"                "$(field plain 'Total test files' skipped)" "$(field runtime 'Total test files' skipped)"
row "  of those resource denied" "$(field plain 'Total test files' resource_denied)" "$(field runtime 'Total test files' resource_denied)"
row "  failed first, passed re-run" "$(rerun plain | wc -l)"             "$(rerun runtime | wc -l)"
row "test cases run"           "$(field plain 'Total tests' run)"        "$(field runtime 'Total tests' run)"
row "  failures"               "$(field plain 'Total tests' failures)"   "$(field runtime 'Total tests' failures)"
row "  skipped"                "$(field plain 'Total tests' skipped)"    "$(field runtime 'Total tests' skipped)"
row "wall time (s)"            "$(cat "$OUT/plain/seconds")"             "$(cat "$OUT/runtime/seconds")"
row "process samples"          "$(wc -l < "$OUT/plain/samples")"         "$(wc -l < "$OUT/runtime/samples")"
row "  processes without runtime" "-" "$(grep -o 'without=\[[^]]' "$OUT/runtime/samples" | wc -l) samples"

echo; echo "failing in both runs:";      comm -12 <(failed plain) <(failed runtime) | sed 's/^/    /'
echo "failing only plain:";              comm -23 <(failed plain) <(failed runtime) | sed 's/^/    /'
echo "re-run only with the runtime (failed once, then passed):"; comm -13 <(rerun plain) <(rerun runtime) | sed 's/^/    /'
only=$(comm -13 <(failed plain) <(failed runtime))
echo "FAILING ONLY WITH THE RUNTIME: ${only:-none}"
[ -z "$only" ] || status=1
exit $status
