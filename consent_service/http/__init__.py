"""What the API and the patient form share.

Request context, security headers, the JSON access log, problem+json answers
and hostile-input-proof parsing. ``api/`` and ``web/`` both import this
package and never each other.
"""
