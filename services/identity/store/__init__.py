"""The identity service's storage: the only identity modules that import mongoengine.

Every document class binds to the connection alias :data:`ALIAS`; the process (or a test)
connects that alias to its database with ``services.platform.mongo.connect(uri, db, alias=ALIAS)``.
"""

from __future__ import annotations

ALIAS = "identity"
