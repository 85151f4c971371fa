"""iaasctl: declarative reconciliation controller for KVM/QEMU hosts on libvirt."""

__version__ = "0.1.0"
