"""Benchmarks: iaasctl against a plain libvirt-python floor, in the same run."""
