#!/usr/bin/python
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Ansible module pulp_livepatch: apply or revert a libpulp-rs live patch in the running
processes of a host, through `pulp-trigger --json` (and `pulp install`/`uninstall` for
processes started later). Idempotent, with check mode (`pulp-trigger --dry-run`)."""

import json
import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: pulp_livepatch
short_description: Apply or revert a libpulp-rs live patch in running processes
description:
  - Applies a live patch (a C(patch.meta) written by C(pulp pack), with its patch object) to
    the running processes of the host that map its targets, or reverts it, by running
    C(pulp-trigger --json) and reading its report; no thread is stopped in a process that is
    already in the state asked for.
  - With I(install=true), also puts the patch into the runtime's patch directory (or takes it
    out) with C(pulp install) / C(pulp uninstall), so that processes started later apply it
    by themselves.
  - Processes that map the target but have not loaded the runtime are reported in
    I(not_live_patchable) and as a warning; processes that map another build of the target
    are reported in I(skipped_processes). Neither fails the task.
options:
  patch:
    description: Path of the C(patch.meta) on the managed host (its patch object next to it, as packed).
    type: path
    required: true
  state:
    description: C(present) applies the patch, C(absent) reverts it.
    type: str
    choices: [present, absent]
    default: present
  processes:
    description:
      - C(all) for every process of the host that maps the targets of the patch with their
        recorded build-ids and has the runtime loaded (C(pulp-trigger --all)), or a list of
        PIDs.
    type: raw
    default: all
  name:
    description: Only processes whose name matches this shell pattern (C(pulp-trigger --name)).
    type: str
  user:
    description: Only processes of this user (C(pulp-trigger --user)).
    type: str
  install:
    description:
      - Also install the patch into the patch directory (I(state=present)) or uninstall it
        (I(state=absent)) with C(pulp install) / C(pulp uninstall), which also apply or
        revert it in every running process. Needs I(processes=all).
    type: bool
    default: false
  patch_dir:
    description:
      - The runtime's patch directory, for I(install) (C(pulp install --dir)). Default
        C($PULP_PATCH_DIR), else C(/etc/pulp/patches.d); the processes' runtimes read theirs
        from their own environment.
    type: path
  timeout:
    description: Seconds threads may stay inside the targets before a transition is left running.
    type: float
    default: 10
  jobs:
    description: Processes worked on at once (default C(pulp-trigger)'s, the CPU count).
    type: int
  pulp_trigger:
    description: The C(pulp-trigger) program.
    type: path
    default: pulp-trigger
  pulp:
    description: The C(pulp) program (for I(install)).
    type: path
    default: pulp
notes:
  - Supports check mode (C(pulp-trigger --dry-run)): nothing is stopped or changed.
  - The task fails when a process refused the patch or a transition was left running (run it
    again, or C(pulp-trigger --continue)); a process that exited meanwhile is a warning.
author: libpulp-rs developers
"""

EXAMPLES = r"""
- name: Fix CVE-2026-1234 in every running process that maps libfoo
  libpulp_rs.livepatch.pulp_livepatch:
    patch: /var/lib/pulp/CVE-2026-1234.meta

- name: And in every process started from now on
  libpulp_rs.livepatch.pulp_livepatch:
    patch: /var/lib/pulp/CVE-2026-1234.meta
    install: true

- name: Take it back from two processes
  libpulp_rs.livepatch.pulp_livepatch:
    patch: /var/lib/pulp/CVE-2026-1234.meta
    state: absent
    processes: [812, 813]
"""

RETURN = r"""
changed:
  description: Whether a process now runs other code, or the patch directory changed.
  type: bool
  returned: always
msg:
  description: The summary line of C(pulp-trigger).
  type: str
  returned: always
processes:
  description: One object per process, as C(pulp-trigger --json) prints it (C(pid), C(name),
    C(result), C(changed), C(exit_status), C(message), ...). In check mode the results are
    C(would_apply) / C(would_revert) / C(already_applied) / C(not_applied).
  type: list
  elements: dict
  returned: always
summary:
  description: The summary object of C(pulp-trigger --json) (C(counts), C(refused_reasons), ...).
  type: dict
  returned: always
not_live_patchable:
  description: PIDs of processes that map the target but have not loaded the runtime.
  type: list
  elements: int
  returned: always
skipped_processes:
  description: Processes left out (another build of the target, ...), with the reason (C(pid),
    C(name), C(reason), C(detail)).
  type: list
  elements: dict
  returned: always
installed:
  description: With I(install), whether the patch is in the patch directory afterwards.
  type: bool
  returned: when install is true
rc:
  description: The exit status of C(pulp-trigger).
  type: int
  returned: always
"""

# Exit statuses of pulp-trigger (see its --help).
EXIT_OK, EXIT_REFUSED, EXIT_LEFT_RUNNING, EXIT_EXITED = 0, 1, 2, 3
CHANGING = ("would_apply", "would_revert")


def selection(module):
    """The pulp-trigger arguments choosing the processes."""
    p = module.params
    procs = p["processes"]
    args = []
    if isinstance(procs, str) and procs == "all":
        if not p["name"] and not p["user"]:
            args.append("--all")
    elif isinstance(procs, list) and procs:
        for pid in procs:
            try:
                args += ["-p", str(int(pid))]
            except (TypeError, ValueError):
                module.fail_json(msg="processes: %r is not a PID (give `all` or a list of PIDs)" % (pid,))
    else:
        module.fail_json(msg="processes: give `all` or a non-empty list of PIDs, not %r" % (procs,))
    if p["name"]:
        args += ["--name", p["name"]]
    if p["user"]:
        args += ["--user", p["user"]]
    return args


def trigger(module, dry_run):
    """Run pulp-trigger --json; returns (rc, process objects, summary object)."""
    p = module.params
    argv = [p["pulp_trigger"], "--json", "--timeout", repr(float(p["timeout"]))]
    if p["jobs"]:
        argv += ["--jobs", str(p["jobs"])]
    if p["state"] == "absent":
        argv.append("--revert")
    if dry_run:
        argv.append("--dry-run")
    if p["processes"] == "all":
        # Every process of the host has the fix when none runs the target.
        argv.append("--allow-none")
    argv += selection(module) + [p["patch"]]
    rc, out, err = module.run_command(argv)
    objects = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            objects.append(json.loads(line))
        except ValueError:
            module.fail_json(msg="pulp-trigger printed something that is not JSON: %s" % line, rc=rc, stderr=err)
    summary = objects.pop() if objects and objects[-1].get("type") == "summary" else None
    if summary is None:
        # A refusal of the whole run (the .meta unreadable, a usage error): no report.
        module.fail_json(msg="pulp-trigger failed: %s" % (err.strip() or out.strip()), rc=rc, cmd=argv)
    return rc, objects, summary


def dir_args(module):
    """--dir DIR when the task names the patch directory."""
    folder = module.params["patch_dir"]
    return ["--dir", folder] if folder else []


def installed(module):
    """Whether the patch is in the patch directory (`pulp installed`: exit 0 yes, 1 no)."""
    p = module.params
    argv = [p["pulp"], "installed"] + dir_args(module) + [p["patch"]]
    rc, out, err = module.run_command(argv)
    if rc not in (0, 1):
        module.fail_json(msg="pulp installed failed (exit %d): %s" % (rc, (err or out).strip()), rc=rc, cmd=argv)
    return rc == 0


def pulp_install(module):
    """pulp install / uninstall FILE.meta; fails the task unless it exits 0."""
    p = module.params
    verb = "install" if p["state"] == "present" else "uninstall"
    argv = [p["pulp"], verb] + dir_args(module) + [p["patch"]]
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg="pulp %s failed (exit %d): %s" % (verb, rc, (err or out).strip()), rc=rc, cmd=argv)
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            patch=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            processes=dict(type="raw", default="all"),
            name=dict(type="str"),
            user=dict(type="str"),
            install=dict(type="bool", default=False),
            patch_dir=dict(type="path"),
            timeout=dict(type="float", default=10.0),
            jobs=dict(type="int"),
            pulp_trigger=dict(type="path", default="pulp-trigger"),
            pulp=dict(type="path", default="pulp"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    present = p["state"] == "present"
    result = {"changed": False}
    if p["install"] and p["processes"] != "all":
        module.fail_json(msg="install: true works on every process (processes: all)")

    if p["install"]:
        was = installed(module)
        directory_changes = was != present
        # What the running processes would go through, before pulp install changes them.
        rc, objects, summary = trigger(module, dry_run=True)
        would = {o["pid"] for o in objects if o.get("result") in CHANGING}
        if module.check_mode:
            result["installed"] = present
        else:
            result["install_output"] = pulp_install(module).strip()
            rc, objects, summary = trigger(module, dry_run=False)
            result["installed"] = installed(module)
            # pulp install already changed these processes; pulp-trigger found them done.
            for o in objects:
                if o["pid"] in would:
                    o["changed"] = True
        result["changed"] = directory_changes or bool(would) or bool(summary.get("changed"))
    else:
        rc, objects, summary = trigger(module, dry_run=module.check_mode)
        if module.check_mode:
            result["changed"] = any(o.get("result") in CHANGING for o in objects)
        else:
            result["changed"] = bool(summary.get("changed"))

    unpatchable = [o["pid"] for o in objects if o.get("result") == "not_live_patchable"]
    result.update(
        msg=summary.get("message", ""),
        processes=objects,
        summary=summary,
        not_live_patchable=unpatchable,
        skipped_processes=summary.get("skipped", []),
        rc=rc,
    )
    if unpatchable:
        module.warn(
            "%d process(es) map the target but have not loaded the runtime (not live-patchable): %s"
            % (len(unpatchable), ", ".join(str(x) for x in unpatchable))
        )
    exited = [o for o in objects if o.get("result") == "exited"]
    for o in exited:
        module.warn("PID %s exited meanwhile: %s" % (o["pid"], o.get("message", "")))
    if rc in (EXIT_OK, EXIT_EXITED):
        module.exit_json(**result)
    failed = [o for o in objects if o.get("result") in ("refused", "left_running", "rolled_back")]
    details = "; ".join(o.get("message", "") for o in failed[:5])
    module.fail_json(**dict(result, msg="%s (%s)" % (result["msg"], details) if details else result["msg"]))


if __name__ == "__main__":
    main()
