"""Helper for tests/test_distributed.py: run a recipe under `accelerate launch` and audit each rank.

    accelerate launch ... tests/dist_run.py AUDIT_DIR finetune|unlearn --config CFG [section.key=value ...]

Runs `recipes/<kind>.py` in this process and writes AUDIT_DIR/rank<R>.json with the recipe's exit code and
how many times this rank opened a `*_manifest.json` file for writing (seen through a Python audit hook).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    audit_dir, kind, *recipe_args = sys.argv[1:]
    writes: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | Path) and str(args[0]).endswith("_manifest.json"):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            if any(flag in mode for flag in "wax+"):
                writes.append(str(args[0]))

    sys.addaudithook(hook)
    spec = importlib.util.spec_from_file_location(f"recipe_{kind}", REPO / "recipes" / f"{kind}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(recipe_args)
    rank = int(os.environ.get("RANK", "0"))
    record = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "exit": code, "writes": writes}
    Path(audit_dir, f"rank{rank}.json").write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(main())
