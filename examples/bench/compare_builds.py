#!/usr/bin/env python3
"""Side by side, in one run: the apply/revert wall time of two builds of libpulp-rs.

    python3 examples/bench/compare_builds.py OLD_TREE NEW_TREE [ROUNDS]

Each tree must have `target/release/{libpulp_rs.so,pulp,pulp-trigger}` built. One `stall`
process (2 threads: the spinner, and one thread calling f every millisecond; f in a
live-patchable library built here) runs under each build's runtime; rounds alternate
between the builds: apply then revert a 1-function patch (a transition, then an
immediate one), each build's `pulp pack` packing its own .meta. Reported per build and
kind: the median wall time from outside (starting the tool included), the median of the
tool's own `total`, the median CPU time the tool used (user + system, less sensitive to a
busy machine than wall time), the median stop of the borrowed thread, and the spinner's
longest gap during the applies (from `stall`'s `gap`), and the new/old ratios.

While one build is measured the other build's `stall` is stopped (SIGSTOP), so that its
spinner does not take the second CPU of a 2-CPU machine. `--loaded` keeps both running:
then two spinners compete with the borrowed thread for the CPUs, and whichever build does
more of its work inside the target pays for it in scheduling delays.
"""
import os, re, resource, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "c", "bench")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def ms(text, key):
    """The duration after `key` in a pulp-trigger summary line, in ms (either format)."""
    m = re.search(re.escape(key) + r"([0-9.]+) ?(µs|ms|s)\b", text)
    if not m:
        return None
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "µs" else v * 1000 if m.group(2) == "s" else v


class Target:
    def __init__(self, exe, runtime):
        env = dict(os.environ, LD_PRELOAD=runtime)
        self.p = subprocess.Popen([exe, "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.p.stdout.readline()

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self):
        self.p.kill()
        self.p.wait()


def main():
    args = [a for a in sys.argv[1:] if a != "--loaded"]
    loaded = len(args) != len(sys.argv) - 1
    old, new = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 30
    work = tempfile.mkdtemp(prefix="pulp-compare-")
    sh("cc", "-O2", "-fPIC", "-shared", "-fpatchable-function-entry=16,14", os.path.join(BENCH, "f.c"),
       "-o", os.path.join(work, "libf.so"))
    sh("cc", "-O2", "-fPIC", "-shared", os.path.join(BENCH, "f_fix.c"), "-o", os.path.join(work, "libf_fix.so"))
    sh("cc", "-O2", os.path.join(BENCH, "stall.c"), "-o", os.path.join(work, "stall"), "-L", work, "-lf",
       "-Wl,-rpath," + work, "-lpthread")
    builds = {}
    for name, tree in (("old", old), ("new", new)):
        rel = os.path.join(tree, "target", "release")
        metas = {}
        for kind, extra in (("transition", ""), ("immediate", "%immediate\n")):
            dsc = os.path.join(work, f"{name}-{kind}.dsc")
            with open(dsc, "w") as f:
                f.write(f"libf_fix.so\n@libf.so\nf:f_new\n{extra}")
            meta = os.path.join(work, f"{name}-{kind}.meta")
            sh(os.path.join(rel, "pulp"), "pack", dsc, "-o", meta)
            metas[kind] = meta
        builds[name] = (rel, metas, Target(os.path.join(work, "stall"), os.path.join(rel, "libpulp_rs.so")))
    results = {}
    for r in range(rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            rel, metas, target = builds[name]
            if not loaded:
                for other in builds.values():
                    os.kill(other[2].p.pid, signal.SIGCONT if other[2] is target else signal.SIGSTOP)
            trigger = os.path.join(rel, "pulp-trigger")
            for kind, meta in metas.items():
                for verb in ("apply", "revert"):
                    target.ask("reset")
                    args = [trigger] + (["--revert"] if verb == "revert" else []) + ["-p", str(target.p.pid), meta]
                    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t0 = time.perf_counter()
                    out = subprocess.run(args, capture_output=True, text=True)
                    wall = (time.perf_counter() - t0) * 1000
                    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu = ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) * 1000
                    if out.returncode != 0:
                        sys.exit(f"{name} {kind} {verb}: {out.stderr}")
                    gap_us = int(target.ask("gap").split("=")[1]) / 1000
                    row = results.setdefault((name, kind, verb), {"wall": [], "cpu": [], "total": [], "stop": [], "gap": []})
                    row["wall"].append(wall)
                    row["cpu"].append(cpu)
                    row["total"].append(ms(out.stdout, "total "))
                    row["stop"].append(ms(out.stdout, "stopped "))
                    row["gap"].append(gap_us)
    for _, _, t in builds.values():
        os.kill(t.p.pid, signal.SIGCONT)
        t.close()
    med = lambda xs: statistics.median([x for x in xs if x is not None])
    print(f"{rounds} rounds, alternating builds ({'both targets running' if loaded else 'the other target stopped'}); medians")
    print("| patch, step | old wall | new wall | new/old | old total | new total | new/old | old CPU | new CPU | new/old | old stop | new stop | old gap | new gap |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("transition", "immediate"):
        for verb in ("apply", "revert"):
            o, n = results[("old", kind, verb)], results[("new", kind, verb)]
            print(f"| {kind} {verb} | {med(o['wall']):.2f} ms | {med(n['wall']):.2f} ms | {med(n['wall'])/med(o['wall']):.3f} "
                  f"| {med(o['total']):.2f} ms | {med(n['total']):.2f} ms | {med(n['total'])/med(o['total']):.3f} "
                  f"| {med(o['cpu']):.2f} ms | {med(n['cpu']):.2f} ms | {med(n['cpu'])/med(o['cpu']):.3f} "
                  f"| {med(o['stop'])*1000:.0f} µs | {med(n['stop'])*1000:.0f} µs "
                  f"| {med(o['gap']):.0f} µs | {med(n['gap']):.0f} µs |")


if __name__ == "__main__":
    main()
