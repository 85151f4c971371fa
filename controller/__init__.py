"""iaasctl: declarative reconciliation controller for KVM/QEMU hosts on libvirt."""

from controller import _methods

__version__ = "0.1.0"

# Before any module of the package defines its records: see _methods.
_methods.install()
