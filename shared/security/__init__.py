"""Authentication, signed links, the SSRF guard and egress proxy, request-body and size limits,
the SQL guard, secrets, PII masking and rate limits."""
