"""Per-kind knowledge: render a spec to libvirt XML, parse libvirt XML back into the
same spec shape, and compare the two field by field with a declared update mode.

Every kind module has the same three functions (`render`, `parse`, `diff`); the
planner and the executor look them up here and never branch on XML details.
"""
