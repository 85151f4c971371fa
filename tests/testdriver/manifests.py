"""Manifest text used by the test-driver tier: one small but complete stack."""

POOL = """\
apiVersion: iaas/v1
kind: StoragePool
metadata:
  name: t-images
spec:
  path: /t-images
"""

VOLUMES = """\
apiVersion: iaas/v1
kind: Volume
metadata:
  name: t-base
spec:
  pool: t-images
  size: 1GiB
  format: qcow2
---
apiVersion: iaas/v1
kind: Volume
metadata:
  name: t-web-root
spec:
  pool: t-images
  size: 2GiB
  source:
    volume: t-base
"""

NETWORK = """\
apiVersion: iaas/v1
kind: Network
metadata:
  name: t-lab
spec:
  mode: nat
  ipv4:
    cidr: 10.77.0.0/24
    dhcp:
      start: 10.77.0.100
      end: 10.77.0.200
    hosts:
      - mac: "52:54:00:77:00:11"
        ip: 10.77.0.11
        hostname: t-web
"""

# The test driver's own network, as a manifest (libvirt's test fixture has it active,
# not autostarted: adopting it turns autostart on).
DEFAULT_NETWORK = """\
apiVersion: iaas/v1
kind: Network
metadata:
  name: default
spec:
  mode: nat
  ipv4:
    cidr: 192.168.122.0/24
    dhcp:
      start: 192.168.122.2
      end: 192.168.122.254
"""


def vm(*, memory: str = "256MiB", power: str = "running", restart: str = "manual", extra: str = "") -> str:
    return f"""\
apiVersion: iaas/v1
kind: VirtualMachine
metadata:
  name: t-web
{extra}spec:
  vcpus: 1
  memory: {memory}
  power: {power}
  restartPolicy: {restart}
  disks:
    - volume: t-web-root
  networks:
    - network: t-lab
      mac: "52:54:00:77:00:11"
"""


def stack(**vm_args: str) -> dict[str, str]:
    return {"pool.yaml": POOL, "volumes.yaml": VOLUMES, "network.yaml": NETWORK, "web.yaml": vm(**vm_args)}
