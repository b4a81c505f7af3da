"""The OpenAPI document describes every API route, and its references resolve."""

from __future__ import annotations

import json
import re

from starlette.routing import Route

from tickerq import TickerQ
from tickerq.dashboard.api import routes


async def test_openapi_document_covers_the_api(memory_app: TickerQ, client_for) -> None:
    async with client_for(memory_app.dashboard()) as client:
        doc = (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (r.path, m)
        for r in routes()
        if isinstance(r, Route) and r.path != "/openapi.json"
        for m in (r.methods or ()) - {"HEAD"}
    }
    assert served == documented
    schemas = doc["components"]["schemas"]
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))):
        assert ref in schemas, ref
    function = schemas["TimeTickerIn"]["properties"]["function"]
    assert set(function["enum"]) == {"send_email", "charge", "nightly"}
    assert schemas["TimeTickerIn"]["additionalProperties"] is False
