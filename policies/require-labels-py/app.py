"""require-labels: every object carries the labels its tenant reports on.

A policy in Python, built into a WebAssembly component with componentize-py
(PyPI) to show that any language that targets components can write
policies:

    componentize-py -d ../wit -w policy componentize app -o require-labels.wasm

On create and update, the proposed object must carry an `owner` label and a
`cost-center` label of the form `cc-<digits>`; otherwise the request is
invalid (422) with one violation per missing or malformed label.
"""

import wit_world
from wit_world.imports import types

REQUIRED = ("owner", "cost-center")


def check(obj: types.Object) -> list:
    labels = dict(obj.labels)
    violations = []
    for key in REQUIRED:
        if not labels.get(key):
            violations.append(
                types.Violation(f"{obj.kind}.labels.{key}", f"the label {key} is required")
            )
    center = labels.get("cost-center", "")
    if center and not (center.startswith("cc-") and center[3:].isdigit()):
        violations.append(
            types.Violation(f"{obj.kind}.labels.cost-center", "must look like cc-<digits>, e.g. cc-1042")
        )
    return violations


class WitWorld(wit_world.WitWorld):
    def evaluate(self, req: types.Request) -> types.Decision:
        if req.operation not in (types.Operation.CREATE, types.Operation.UPDATE) or req.proposed is None:
            return types.Decision_Allow()
        violations = check(req.proposed)
        if not violations:
            return types.Decision_Allow()
        fields = ", ".join(v.field for v in violations)
        return types.Decision_Deny(
            types.Denial(
                types.DenialKind.INVALID,
                "LABELS_REQUIRED",
                f"{req.proposed.name} needs the labels owner and cost-center (cc-<digits>); fix {fields}",
                violations,
            )
        )
