"""Compact JSON text (UTF-8, no spaces): one encoder for responses, events and the audit log.

``json.dumps`` with arguments builds a new ``JSONEncoder`` on every call;
this one is built once, which is a few µs of every JSON response.
"""

from __future__ import annotations

import json

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
