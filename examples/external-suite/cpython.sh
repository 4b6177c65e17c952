#!/bin/bash
# CPython's own test suite with the libpulp-rs runtime preloaded into every one of its
# processes, beside the same suite without it (issue 18, item 3).
#
#   examples/external-suite/cpython.sh [TEST ...]      (as root, after cargo build --release)
#
# The runtime goes into /etc/ld.so.preload, as `pulp preload on` puts it on a machine, but
# only inside a private mount namespace: /etc is overlaid there (the machine's own
# /etc/ld.so.preload is never written), so every process the suite starts there, whatever
# its environment (subprocesses with env={}, setuid helpers, multiprocessing's fork
# server), maps the runtime. The suite is Debian's libpython3.11-testsuite (installed if
# missing) run by the system's /usr/bin/python3. TEST names the test modules; the default
# is the list below (processes, threads, signals, fork, loading, OpenSSL, zlib, expat;
# not test_sqlite3, which Debian does not ship, nor test_socket, which waits for name
# lookups a machine without a network never answers); `all` runs the whole suite. Output: both runs' logs under
# target/external-suite/ and the failures of each; exit 0 when the run with the runtime
# fails no test the run without it passes.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
out=$root/target/external-suite
python=/usr/bin/python3
pulp=$root/target/release/pulp

[ "$(id -u)" = 0 ] || { echo "cpython.sh: run as root (it mounts an overlay of /etc in a private namespace)" >&2; exit 2; }
[ -x "$pulp" ] && [ -f "$root/target/release/libpulp_rs.so" ] || {
    echo "cpython.sh: build first: cargo build --release --workspace" >&2
    exit 2
}
if [ ! -f /usr/lib/python3.11/test/test_subprocess.py ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11-testsuite
fi

default_tests=(
    test_subprocess test_threading test_thread test_threadsignals test_signal test_os
    test_posix test_fork1 test_wait3 test_wait4 test_pty test_select test_selectors
    test_faulthandler test_sys test_gc test_mmap test_resource test_concurrent_futures
    test_multiprocessing_forkserver test_ctypes test_importlib test_zipimport test_tempfile
    test_shutil test_ssl test_hashlib test_hmac test_zlib test_gzip test_pyexpat
    test_xml_etree test_json test_re test_unicode test_io test_fileio
    test_asyncio
)
if [ $# -eq 0 ]; then
    tests=("${default_tests[@]}")
elif [ "$1" = all ]; then
    tests=()
else
    tests=("$@")
fi

rm -rf "$out"
mkdir -p "$out/upper" "$out/work"
chmod 755 "$out"
# The runtime the suite runs with: a copy a later build cannot replace under it, in a
# folder only root may write (what `pulp preload on` asks of it).
cp "$root/target/release/libpulp_rs.so" "$out/libpulp_rs.so"
chmod 755 "$out/libpulp_rs.so"

# -j2: two workers (each a process of its own); -u none: no network, GUI or
# large-resource tests; a per-test timeout so a hang ends the run instead of hiding.
regrtest=("$python" -m test -j2 -u none --timeout 900)

suite() { # NAME: run the suite, keep the log, print its failed tests one per line
    local name=$1
    shift
    set +e
    "$@" "${regrtest[@]}" "${tests[@]}" > "$out/$name.log" 2>&1
    set -e
    "$python" - "$out/$name.log" > "$out/$name.failed" <<'EOF'
import re, sys
text = open(sys.argv[1], errors="replace").read()
failed = set()
for m in re.finditer(r"^(\d+|\w+) tests? (failed|altered the execution environment|failed again|crashed):\n((?:    .*\n)+)", text, re.M):
    if m.group(2) in ("failed", "failed again", "crashed"):
        failed.update(m.group(3).split())
for m in re.finditer(r"^(test_\w+) failed\b", text, re.M):
    failed.add(m.group(1))
for name in sorted(failed):
    print(name)
EOF
    echo "$name: $(grep -E '^Tests result:|^All [0-9]+ tests OK|^[0-9]+ tests? (OK|failed|skipped|altered|crashed)|^[0-9]+ tests? skipped' "$out/$name.log" | tr '\n' ' ')"
}

with_runtime() { # COMMAND...: run in a private mount namespace whose /etc preloads the runtime
    unshare --mount --propagation private -- bash -c '
        set -e
        out=$1; pulp=$2; shift 2
        mount -t overlay overlay -o "lowerdir=/etc,upperdir=$out/upper,workdir=$out/work" /etc
        "$pulp" preload on --runtime "$out/libpulp_rs.so" > /dev/null
        # Every process here maps it, even one started with an empty environment.
        env -i /usr/bin/python3 -c "import sys; sys.exit(0 if \"libpulp_rs.so\" in open(\"/proc/self/maps\").read() else 1)" \
            || { echo "cpython.sh: the runtime is not preloaded" >&2; exit 2; }
        exec "$@"' with-runtime "$out" "$pulp" "$@"
}

echo "CPython $("$python" -c 'import sys; print(sys.version.split()[0])'), ${#tests[@]} test modules (0: all), logs in $out"
suite plain env
suite runtime with_runtime
[ -s "$out/runtime.failed" ] && echo "failed with the runtime: $(tr '\n' ' ' < "$out/runtime.failed")"
[ -s "$out/plain.failed" ] && echo "failed without it: $(tr '\n' ' ' < "$out/plain.failed")"
only_with=$(comm -13 "$out/plain.failed" "$out/runtime.failed")
if [ -n "$only_with" ]; then
    echo "FAILED only with the runtime preloaded: $only_with"
    exit 1
fi
echo "no test fails with the runtime preloaded that passes without it"
