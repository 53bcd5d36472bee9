"""HTTP/1.1 parsed by httptools (llhttp, in C): the core of the lean transports that the Tornado
and Twisted front doors offer as ``client="httptools"`` (:mod:`corduroy2.http1.client`).

Framework-neutral: each front door gives it its own connections (:class:`~.client.Link`) and
connects them (:class:`~.client.Connector`). Imported only when ``client="httptools"`` is asked
for, so nothing else needs httptools.
"""
