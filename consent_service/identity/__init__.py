"""OpenID Connect access tokens beside API keys: the issuer's signing keys and token checks.

- ``jwks``: the issuer's key set, fetched (or discovered), cached for a
  bounded time, refetched on an unknown ``kid`` at a limited rate.
- ``tokens``: verifying a token and mapping its claims to a ``Principal``.

No Flask here: ``http.auth`` calls it with the token and the settings.
"""
