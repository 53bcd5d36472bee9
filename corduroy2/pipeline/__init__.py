"""The request pipeline, between the API and the backend: credentials, their renewal, retries.

* :mod:`~corduroy2.pipeline.retry`: the retry policy (pure).
* :mod:`~corduroy2.pipeline.decision`: what to do once an attempt has ended (pure).
* :mod:`~corduroy2.pipeline.auth`: the auth providers and single-flight renewal.
* :mod:`~corduroy2.pipeline.exchange`: the :class:`~corduroy2.pipeline.exchange.Sender` every
  request of a ``Couch`` goes out through, and the exchange that carries one request.

The API depends on this floor, and this floor only on :mod:`corduroy2.backend` and below.
"""

from .auth import Auth, BasicAuth, CookieAuth, JWTAuth, ProxyAuth, as_auth
from .exchange import Exchange, Sender
from .retry import DEFAULT_RETRY, Retry, as_retry

__all__ = ["Auth", "BasicAuth", "CookieAuth", "JWTAuth", "ProxyAuth", "as_auth", "Exchange",
           "Sender", "DEFAULT_RETRY", "Retry", "as_retry"]
