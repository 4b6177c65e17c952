#!/usr/bin/env bash
# The test suite, set-up included: installs what a fresh Debian/Ubuntu machine lacks (as
# root with apt-get, else through sudo; otherwise it stops before building and names the
# packages and the command to install them), makes the Ansible virtual environment under
# target/ansible, then builds the workspace and runs every test. When everything is
# present it installs nothing. Arguments are passed to `cargo test` (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")"

# What the tests run, and the Debian package that brings it: C and C++ compilers (fixtures
# are built with gcc and with clang), make and cmake (pulp-cc is tested under both),
# setpriv (processes of another user), strace (the hostile tests kill and slow the tools
# with its fault injection), unshare and mount (targets in other namespaces or a chroot),
# readelf (build-ids), patch (pulp build-patch applies diffs with it), python3 with venv
# (tests/ansible.rs runs ansible-core from PyPI), gawk and bison (glibc's configure, for
# tests/buildpatch_upstream_glibc.rs), curl and xz (its source tarball from deb.debian.org).
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want cc gcc
want c++ g++
want clang clang
want cmake cmake
want make make
want patch patch
want setpriv util-linux
want setcap libcap2-bin
want unshare util-linux
want mount mount
want strace strace
want readelf binutils
want python3 python3
want gawk gawk
want bison bison
want curl curl
want xz xz-utils
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need+=(python3-venv)
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u | sed '/^$/d')

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo)
    else
        echo "test.sh: missing Debian packages: ${need[*]}" >&2
        echo "install them, then run ./test.sh again:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "test.sh: installing ${need[*]}" >&2
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# ansible-core for tests/ansible.rs, in a virtual environment under target/ (the test looks
# there when ansible-playbook is not on PATH).
if ! command -v ansible-playbook >/dev/null 2>&1 && [ ! -x target/ansible/bin/ansible-playbook ]; then
    echo "test.sh: installing ansible-core into target/ansible" >&2
    rm -rf target/ansible
    python3 -m venv target/ansible
    target/ansible/bin/pip install --quiet ansible-core
fi

cargo build --release --workspace
cargo test --release --workspace --no-fail-fast "$@"
