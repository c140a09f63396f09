"""Build the example models that are missing (``nox -s demo`` runs this before serving).

Each example that needs a trained artefact has a ``trainer/`` folder; its scripts run only when
the artefact they write is not there yet, so a second ``nox -s demo`` starts at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    for script in sorted(HERE.glob("*/trainer/*.py")):
        example = script.parent.parent
        target = example / "models" / script.stem
        if any(target.glob("model.*")):
            continue
        print(f"prepare: training {script.relative_to(HERE)}", flush=True)
        subprocess.run([sys.executable, str(script)], cwd=example, check=True)


if __name__ == "__main__":
    main()
