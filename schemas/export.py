"""Writes the JSON Schema of every wire message to schemas/json/ for agent authors:
`python -m schemas.export` (a test fails when the files are out of date)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.register import RegisterAccepted, RegisterRejected, RegisterRequest
from schemas.reports import REPORT_MODELS

JSON_DIR = Path(__file__).parent / "json"


def documents() -> dict[str, str]:
    """File name -> JSON text, for every exported message."""
    models: dict[str, type[BaseModel]] = {f"{kind}.v1": m for kind, m in REPORT_MODELS.items()}
    models.update(
        {
            "register.v1": RegisterRequest,
            "register-accepted.v1": RegisterAccepted,
            "register-rejected.v1": RegisterRejected,
        }
    )
    out = {}
    for name, model in models.items():
        schema = model.model_json_schema(by_alias=True)
        schema["$id"] = f"https://siloflow.dev/schemas/{name}.json"
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main() -> int:
    """Write the JSON Schema files (`python -m schemas.export`); 0 when done."""
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in documents().items():
        (JSON_DIR / name).write_text(text)
        print(f"wrote {JSON_DIR / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
