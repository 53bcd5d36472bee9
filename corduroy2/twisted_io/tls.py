"""Twisted's TLS for both Twisted transports: how HTTPS connections are made and verified.

``twisted.internet.ssl`` (hence pyOpenSSL and service_identity) is imported only for an HTTPS
request, or when the ``Couch`` is given TLS settings: plain HTTP works without the
``twisted[tls]`` extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ..backend import TransportOptions, warn_unverified

__all__ = ["MissingTLS", "twisted_ssl", "is_https", "TLSPolicy", "is_tls_error"]


class MissingTLS(ImportError):
    """Twisted's TLS support (pyOpenSSL, service_identity) is not installed."""


def twisted_ssl() -> ModuleType:
    """``twisted.internet.ssl``, imported when TLS is first needed, so that plain HTTP works
    without pyOpenSSL; if it is missing, an error that says which extra to install."""
    try:
        return importlib.import_module("twisted.internet.ssl")
    except ImportError as exc:
        raise MissingTLS(f"HTTPS on Twisted needs the twisted[tls] extra (pyOpenSSL, "
                         f"service_identity), which is not installed (no module "
                         f"{exc.name or exc!r}): pip install 'twisted[tls]'") from exc


def is_https(url: str) -> bool:
    return url[:6].lower() == "https:"


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """How every HTTPS connection of one backend is made: verified against the system's CAs or
    ``ca_file``'s (a bundle: every certificate in it is trusted), with the host name checked
    (``service_identity``), presenting ``cert_file``/``key_file`` if given; or, with the
    explicit ``verify_tls=False`` opt-out, without any certificate check."""

    def __init__(self, options: TransportOptions) -> None:
        self._verify = options.verify_tls
        self._trust: Any = None  # None: the system's CAs
        self._client: dict[str, Any] = {}
        if options.custom_tls:
            # Settings the user gave are loaded now, so that a bad file, or a missing
            # pyOpenSSL, fails when the Couch is made rather than at the first request.
            ssl = twisted_ssl()
            if options.ca_file:
                self._trust = _trust_root(ssl, options.ca_file)
            if options.cert_file:
                self._client = _client_certificate(options.cert_file, options.key_file)
        if not self._verify:
            warn_unverified()

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        ssl = twisted_ssl()
        if not self._verify:
            return ssl.CertificateOptions(verify=False, **self._client)
        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust,
                                       extraCertificateOptions=dict(self._client))


def _trust_root(ssl: ModuleType, ca_file: str) -> Any:
    """Every certificate of the PEM bundle ``ca_file``, as the CAs to trust."""
    with open(ca_file, "rb") as f:
        certs = [ssl.Certificate.loadPEM(pem) for pem in _pem_blocks(f.read())]
    if not certs:
        raise ValueError(f"no PEM certificate in ca_file {ca_file!r}")
    return ssl.trustRootFromCertificates(certs)


def _client_certificate(cert_file: str, key_file: str | None) -> dict[str, Any]:
    """``CertificateOptions`` arguments presenting the client certificate (then its chain) and
    key, as ``cryptography`` objects: what pyOpenSSL takes without deprecation warnings."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    with open(cert_file, "rb") as f:
        cert_pem = f.read()
    key_pem = cert_pem
    if key_file:
        with open(key_file, "rb") as f:
            key_pem = f.read()
    chain = x509.load_pem_x509_certificates(cert_pem)
    key = load_pem_private_key(key_pem, password=None)
    if key.public_key() != chain[0].public_key():
        raise ValueError(f"key_file does not match cert_file {cert_file!r}")
    client: dict[str, Any] = {"certificate": chain[0], "privateKey": key}
    if chain[1:]:
        client["extraCertChain"] = chain[1:]
    return client


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    blocks = []
    for part in data.split(marker)[:-1]:
        begin = part.find(b"-----BEGIN CERTIFICATE-----")
        if begin >= 0:
            blocks.append(part[begin:] + marker + b"\n")
    return blocks


def is_tls_error(exc: BaseException | None) -> bool:
    """pyOpenSSL's errors, and service_identity's (the certificate is not for this host)."""
    return exc is not None and type(exc).__module__.startswith(("OpenSSL", "service_identity"))


