"""schemathesis hooks for kurz's contract run.

A create's Idempotency-Key makes a retry return the original link, and the same key with a
different request is refused (422, tested in kurz's own suite). Generated keys are short and
repeat across unrelated cases, which would turn most creates into that refusal; each case
gets a key of its own instead.
"""
import uuid

import schemathesis


@schemathesis.hook
def map_headers(ctx, headers):
    if headers is not None and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    return headers
