"""Exit 1 unless exactly one TensorFlow distribution is installed in this environment.

`tensorflow` and `tensorflow-cpu` (or `-intel`, `-macos`, `tf-nightly`...) install the same `tensorflow`
package folder: with two, whichever was installed last silently wins, and `pip uninstall` of either
breaks the other. The image build runs this after installing, so such an image is never made.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys

NAMES = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
         "tf-nightly", "tf-nightly-cpu"}


def installed_tensorflows() -> list[str]:
    """Canonical names (PEP 503) of the installed TensorFlow distributions, with versions."""
    found = []
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name in NAMES:
            found.append(f"{name}=={dist.version}")
    return sorted(found)


if __name__ == "__main__":
    tensorflows = installed_tensorflows()
    print("TensorFlow:", ", ".join(tensorflows) or "none")
    sys.exit(0 if len(tensorflows) == 1 else 1)
