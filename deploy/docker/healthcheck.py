"""The image's HEALTHCHECK: exit 0 only when the service is *ready* (GET /readyz answers 200: models
loaded and warm), not merely alive (/healthz), so Docker, compose's `depends_on: service_healthy` and
anything reading the health state see a replica as healthy only once it can serve.

Standard library only (no curl in the image). When probes need a key (AEC_PROBES_REQUIRE_KEY=true),
it sends the first of AEC_API_KEYS.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TRUE = {"1", "true", "yes", "on"}


def main() -> int:
    port = os.environ.get("AEC_PORT", "8000")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/readyz")
    keys = [k.strip() for k in os.environ.get("AEC_API_KEYS", "").split(",") if k.strip()]
    if keys and os.environ.get("AEC_PROBES_REQUIRE_KEY", "").strip().lower() in TRUE:
        request.add_header("X-API-Key", keys[0])
    try:
        with urllib.request.urlopen(request, timeout=float(os.environ.get("AEC_HEALTHCHECK_TIMEOUT_S", "3"))) as answer:
            print(answer.read(200).decode(errors="replace"))
            return 0 if answer.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503 not_ready: still loading, or no model could be loaded
        print(f"not ready: {exc.code} {exc.read(300).decode(errors='replace')}")
    except OSError as exc:  # not listening yet, or hung past the timeout
        print(f"not ready: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
