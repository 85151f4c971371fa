"""Regenerate the command output shown in docs/tutorial.md.

libvirt's test driver (test:///default) keeps its objects only while a connection
to it is open in the same process, so every step runs here, in one process, through
`controller.cli.main`, while one connection is held open. Nothing touches the real
host: the state directory is a scratch directory and no file is created under the
pool paths.

    PYTHONPATH=. python docs/tutorial-session.py [WORKDIR]    (default /tmp/tut)

The last part runs the daemon the way `iaasctl run` does, through
`controller.cli.main(["run", ...])` on the main thread (which needs the signal
handlers), while a second thread plays the other terminal: it destroys the VM
through the connection held open here (what `virsh destroy` does on a real host),
waits for the daemon to start it again, runs `events` and `describe`, and finally
sends this process SIGTERM. The daemon's log is collected and printed at the end.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

WORK = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tut")
STATE = "/tmp/tut-state"
FLAGS = ["--connect", "test:///default", "--state-dir", STATE]

POOL = """\
apiVersion: iaas/v1
kind: StoragePool
metadata:
  name: lab-images
spec:
  path: /var/lib/libvirt/images/lab
"""

VOLUMES = """\
apiVersion: iaas/v1
kind: Volume
metadata:
  name: lab-base
spec:
  pool: lab-images
  size: 1GiB
  format: qcow2
---
apiVersion: iaas/v1
kind: Volume
metadata:
  name: web-root
spec:
  pool: lab-images
  size: 4GiB
  source:
    volume: lab-base        # copy-on-write clone: a qcow2 overlay on lab-base
"""

NETWORK = """\
apiVersion: iaas/v1
kind: Network
metadata:
  name: lab
spec:
  mode: nat
  domain: lab.internal
  ipv4:
    cidr: 10.20.0.0/24
    dhcp:
      start: 10.20.0.100
      end: 10.20.0.200
    hosts:
      - mac: "52:54:00:20:00:10"
        ip: 10.20.0.10
        hostname: web
"""

# the test driver's own network, which iaasctl does not own
THEIR_NETWORK = """\
apiVersion: iaas/v1
kind: Network
metadata:
  name: default
spec:
  mode: nat
  ipv4:
    cidr: 192.168.122.0/24
"""


def vm(memory: str = "256MiB", policy: str = "manual", power: str = "running") -> str:
    return f"""\
apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: web
  labels:
    app: web
spec:
  vcpus: 1
  memory: {memory}
  power: {power}
  restartPolicy: {policy}
  boot:
    kernel: /var/lib/libvirt/boot/iaasctl-guest/vmlinuz
    initrd: /var/lib/libvirt/boot/iaasctl-guest/initrd.gz
    cmdline: console=ttyS0
  disks:
    - volume: web-root
  networks:
    - network: lab
      mac: "52:54:00:20:00:10"
"""


BROKEN_VM = vm().replace(
    'mac: "52:54:00:20:00:10"', "mac: 52:54:00:20:00:10").replace("vcpus: 1", "vcpus: 1\n  memroy: 1GiB")


def write(name: str, text: str, root: Path | None = None) -> None:
    (root or WORK / "lab").joinpath(name).write_text(text)


def step(*args: str) -> int:
    from controller.cli import main

    print(f"\n$ iaasctl {' '.join(args)}", flush=True)
    code = main([*FLAGS, *args])
    sys.stdout.flush()
    sys.stderr.flush()
    print(f"[exit {code}]", flush=True)
    return code


def wait_for(probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the daemon")
        time.sleep(0.05)


def beside_the_daemon(banner: str, others: Callable[[io.StringIO], None]) -> None:
    """`iaasctl run -f lab/` on the main thread (its signal handlers need it), its log
    collected; `others` plays the other terminals on a thread, with the log as it
    grows, and then the daemon is sent SIGTERM. The log is printed last."""
    from controller.cli import main as cli_main

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)      # cmd_run's basicConfig then leaves it as it is
    logging.getLogger().setLevel(logging.INFO)

    def terminals() -> None:
        try:
            others(log)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    print(f"\n######## {banner}", flush=True)
    thread = threading.Thread(target=terminals)
    thread.start()
    code = cli_main([*FLAGS, "run", "-f", "lab/"])
    thread.join()
    logging.getLogger().removeHandler(handler)
    print("\n######## terminal 1", flush=True)
    print("\n$ iaasctl run -f lab/")
    print(log.getvalue(), end="")
    print(f"[exit {code}]", flush=True)


def keep_it_converged(keep: libvirt.virConnect) -> None:
    """`iaasctl run -f lab/`; the other terminal destroys the VM and looks."""
    from controller.model import Kind, Ref
    from controller.state import StateStore

    web = Ref(Kind.VM, "web")

    def running() -> bool:
        try:
            return bool(keep.lookupByName("web").isActive())
        except libvirt.libvirtError:
            return False

    def ready() -> bool:
        store = StateStore(STATE)
        try:
            found = {c.type: c for c in store.conditions(web)}
            return "Ready" in found and found["Ready"].status and "Drifted" in [e.reason for e in store.events(web)]
        finally:
            store.close()

    def other_terminal(_log: io.StringIO) -> None:
        wait_for(running)
        time.sleep(2)                            # the pass after the daemon's own events
        print("\n$ virsh destroy web", flush=True)
        keep.lookupByName("web").destroy()
        wait_for(ready)
        time.sleep(1)
        step("events", "vm", "web")
        step("describe", "vm", "web")

    beside_the_daemon("terminal 2", other_terminal)


LAB2 = """\
apiVersion: iaas/v1
kind: Network
metadata:
  name: lab2
spec:
  mode: nat
  ipv4:
    cidr: 10.21.0.0/24
    dhcp:
      start: 10.21.0.100
      end: 10.21.1.200
"""
API = "http://127.0.0.1:8080"


def curl(method: str, path: str, body: str | None = None, shown: str = "") -> None:
    """A request to the API, shown as the curl command that makes it, and its answer."""
    import urllib.error
    import urllib.request

    data = f" --data-binary @{shown}" if shown else ""
    verb = "" if method == "GET" else f" -X {method}"
    print(f"\n$ curl -s{verb}{data} {API}{path}", flush=True)
    request = urllib.request.Request(API + path, data=body.encode() if body else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    print(text, end="")
    print(f"[HTTP {status}]", flush=True)


def the_api() -> None:
    """`iaasctl run -f lab/`; in the other terminals, `iaasctl serve --manifests lab/`
    and the requests a client makes to it."""
    import urllib.request

    from controller.api import serve
    from controller.config import load_config
    from controller.state import StateStore

    config = load_config(None, connect="test:///default", state_dir=STATE)
    begun = time.time()

    def first_pass() -> bool:
        store = StateStore(STATE)
        try:
            last = store.daemon_state().get("last_pass")
            return isinstance(last, float) and last > begun
        finally:
            store.close()

    def other_terminals(log: io.StringIO) -> None:
        stop = threading.Event()
        ready = threading.Event()
        server = threading.Thread(target=serve, args=(config, "127.0.0.1:8080"),
                                  kwargs=dict(manifests="lab", token_file=None, stop=stop,
                                              ready=lambda url: ready.set()))
        try:
            wait_for(first_pass)
            server.start()
            assert ready.wait(10)
            curl("GET", "/v1/vms")
            write("lab2.yaml", LAB2, WORK)
            curl("PUT", "/v1/manifests/lab2", LAB2, shown="lab2.yaml")
            fixed = LAB2.replace("10.21.1.200", "10.21.0.200")
            write("lab2.yaml", fixed, WORK)
            curl("PUT", "/v1/manifests/lab2", fixed, shown="lab2.yaml")
            wait_for(lambda: "create Network/lab2" in log.getvalue())
            time.sleep(1)
            curl("GET", "/v1/networks")
            print(f"\n$ curl -s {API}/metrics | grep 'type=\"Ready\"'", flush=True)
            with urllib.request.urlopen(API + "/metrics", timeout=30) as answer:
                print("".join(line + "\n" for line in answer.read().decode().splitlines()
                              if 'type="Ready"' in line), end="", flush=True)
        finally:
            stop.set()
            if server.is_alive():
                server.join()

    beside_the_daemon("terminals 2 and 3", other_terminals)


def say(text: str) -> None:
    print(f"\n######## {text}", flush=True)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.rmtree(STATE, ignore_errors=True)
    (WORK / "lab").mkdir(parents=True)
    os.chdir(WORK)
    keep = libvirt.open("test:///default")   # the test driver's host lives while this is open
    try:
        write("pool.yaml", POOL)
        write("volumes.yaml", VOLUMES)
        write("network.yaml", NETWORK)
        write("vm.yaml", vm())

        say("validate: a broken copy")
        (WORK / "broken").mkdir()
        for name in ("pool.yaml", "network.yaml"):
            shutil.copy(WORK / "lab" / name, WORK / "broken" / name)
        write("volumes.yaml", VOLUMES.replace("volume: lab-base ", "volume: lab-bse "), WORK / "broken")
        write("vm.yaml", BROKEN_VM, WORK / "broken")
        step("validate", "broken/")
        step("validate", "lab/")

        say("plan and apply")
        step("plan", "-f", "lab/")
        step("apply", "-f", "lab/")
        step("plan", "-f", "lab/")

        say("get / describe")
        for kind in ("pools", "volumes", "networks", "vms"):
            step("get", kind)
        step("describe", "vm", "web")

        say("memory, manual restart policy")
        write("vm.yaml", vm(memory="512MiB"))
        step("plan", "-f", "lab/")
        step("apply", "-f", "lab/")
        step("plan", "-f", "lab/")
        step("get", "vm", "web")

        say("restartPolicy auto")
        write("vm.yaml", vm(memory="512MiB", policy="auto"))
        step("plan", "-f", "lab/")
        step("apply", "-f", "lab/")
        step("get", "vm", "web")

        say("power stopped")
        write("vm.yaml", vm(memory="512MiB", policy="auto", power="stopped"))
        step("apply", "-f", "lab/")
        step("get", "vm", "web")

        say("delete: refused while the VM that stays uses it")
        step("delete", "-f", "lab/network.yaml")

        say("prune: vm.yaml removed")
        (WORK / "lab" / "vm.yaml").unlink()
        step("plan", "-f", "lab/")
        step("apply", "-f", "lab/")

        say("mass-delete guard: an empty checkout")
        (WORK / "elsewhere").mkdir()
        for path in (WORK / "lab").iterdir():
            path.rename(WORK / "elsewhere" / path.name)
        step("plan", "-f", "lab/")
        for path in (WORK / "elsewhere").iterdir():
            path.rename(WORK / "lab" / path.name)
        step("plan", "-f", "lab/")

        say("delete")
        step("delete", "-f", "lab/")
        step("get", "pools")

        say("delete: an object iaasctl does not own")
        (WORK / "theirs").mkdir()
        write("default-network.yaml", THEIR_NETWORK, WORK / "theirs")
        step("delete", "-f", "theirs/")

        say("keep it converged: iaasctl run")
        write("vm.yaml", vm(memory="512MiB", policy="auto", power="running"))
        keep_it_converged(keep)

        say("the REST API: iaasctl serve")
        the_api()
    finally:
        keep.close()


if __name__ == "__main__":
    main()
