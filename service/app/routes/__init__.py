"""One router per concern; the app includes each directly (also served under /v1 by VersionPrefixMiddleware).

Directly, not through one umbrella router: FastAPI matches included routers level by level, and a
level of nesting is measurable per request on the hot routes (bench/serve.py).
"""

from service.app.routes import anomaly, codec, compare, health, models

API_ROUTERS = (codec.router, anomaly.router, compare.router, models.router, health.router)
