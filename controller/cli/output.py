"""How plans, progress and status look on a terminal and to machines (-o json|yaml)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


from typing import TYPE_CHECKING

from controller.plan import Action, Change, Disruption, Plan

if TYPE_CHECKING:
    from controller.execute import Outcome


def plan_document(plan: Plan) -> dict[str, Any]:
    """`plan -o json`: the documented machine-readable shape."""
    return {
        "changes": [
            {
                "kind": c.ref.kind.value,
                "name": c.ref.name,
                "action": c.action.value,
                "fields": [{"path": f.path, "old": f.old, "new": f.new, "mode": f.mode.value} for f in c.fields],
                "disruption": c.disruption.value,
                "reason": c.reason,
            }
            for c in plan.changes
        ],
        "refusals": [{"kind": r.ref.kind.value, "name": r.ref.name, "message": r.message} for r in plan.refusals],
        "notes": [{"kind": n.ref.kind.value, "name": n.ref.name, "reason": n.reason, "message": n.message}
                  for n in plan.notes],
    }


def print_plan(plan: Plan, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for change in plan.changes:
        out.write(f"{change.action.symbol} {change.ref}  {_headline(change)}\n")
        for f in change.fields:
            out.write(f"      {f.path}: {_show(f.old)} -> {_show(f.new)}\n" if f.old is not None
                      else f"      {f.path}: {_show(f.new)}\n")
        out.write(f"      # {change.reason}\n")
    for note in plan.notes:
        out.write(f"! {note.ref}  {note.reason}: {note.message}\n")
    for refusal in plan.refusals:
        out.write(f"x {refusal.ref}  refused: {refusal.message}\n")
    out.write(summary_line(plan) + "\n")


def summary_line(plan: Plan) -> str:
    if plan.empty and not plan.refusals:
        return "No changes: the host matches the manifests."
    counts = plan.counts()
    parts = [f"{n} to {action}" for action, n in counts.items()]
    if plan.refusals:
        parts.append(f"{len(plan.refusals)} refused")
    return "Plan: " + ", ".join(parts) + "."


def _headline(change: Change) -> str:
    text = change.action.value
    if change.adopt and change.action is not Action.ADOPT:
        text += " (adopting)"
    if change.disruption is not Disruption.NONE:
        text += f" [{change.disruption.value}]"
    return text


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_progress(change: Change, outcome: Outcome | None, out: TextIO | None = None) -> None:
    out = out or sys.stderr
    if outcome is None:
        out.write(f"  ... {change.action.value} {change.ref}\n")
    elif outcome.ok:
        out.write(f"  ok  {change.action.value} {change.ref} ({outcome.seconds:.1f}s)\n")
    else:
        label = "skip" if outcome.skipped else "FAIL"
        out.write(f"  {label} {change.action.value} {change.ref}: {outcome.error}\n")
    out.flush()


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[_show(row.get(col.lower(), "")) if row.get(col.lower()) is not None else "-" for col in columns]
             for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    out.write("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def dump(data: Any, fmt: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        json.dump(data, out, indent=2, sort_keys=False, default=str)
        out.write("\n")
    else:
        import yaml

        yaml.safe_dump(data, out, sort_keys=False, default_flow_style=False)
