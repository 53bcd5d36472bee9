"""The pure core: stdlib and orjson only. No sockets, no event loop, no framework.

Everything here turns arguments into :class:`~corduroy2.protocol.requests.Request` values and
response bytes into data or typed errors, so it can be tested without any IO.
"""
