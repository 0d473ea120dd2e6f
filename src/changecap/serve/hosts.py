"""Which ``Host`` headers ``changecap serve`` answers (a guard against DNS rebinding).

A web page the user visits can point its own domain name at 127.0.0.1 and then drive the local API from the
browser; every such request carries that domain name in its ``Host`` header. The server therefore answers only
requests addressed to ``localhost``, a loopback address or the address it is bound to, plus the names given with
``--allowed-hosts`` (``*`` allows any). When it is bound to every interface (``0.0.0.0`` or ``::``) there is no one
address to compare with, so any IP address is accepted as well: a rebinding page always sends a name, never an
address. Requests without a ``Host`` header (HTTP/1.0) are answered, since browsers always send one.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

LOCAL_NAMES = frozenset({"localhost"})
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def normalize_host(name: str) -> str:
    """A host name or address in the form the check compares: lower case, no brackets, no trailing dot."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name


def host_of(header: str) -> str:
    """The host part of a ``Host`` header value (``example.org:8000``, ``[::1]:8000``, ``127.0.0.1``)."""
    header = header.strip()
    if header.startswith("["):  # [IPv6]:port
        return normalize_host(header[: header.find("]") + 1] if "]" in header else header)
    if header.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        header = header.split(":", 1)[0]
    return normalize_host(header)


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine."""
    name = normalize_host(host)
    ip = _ip(name)
    return name in LOCAL_NAMES if ip is None else ip.is_loopback


class HostCheck:
    """ASGI middleware answering 400 to HTTP requests whose ``Host`` header is not allowed (module docstring)."""

    def __init__(self, app: Any, bound: str, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.names = {normalize_host(n) for n in allowed if n.strip()} | LOCAL_NAMES
        self.any_host = "*" in self.names
        bound_name = normalize_host(bound)
        self.any_address = bound_name in WILDCARD_ADDRESSES
        if not self.any_address:
            self.names.add(bound_name)

    def allows(self, host: str) -> bool:
        if self.any_host or host in self.names:
            return True
        ip = _ip(host)
        return ip is not None and (ip.is_loopback or self.any_address)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if header is None or self.allows(host_of(header)):
            await self.app(scope, receive, send)
            return
        shown = "".join(c for c in header if c.isprintable())[:100]
        detail = (f"Host header '{shown}' is not allowed: this server answers localhost and the address it is "
                  f"bound to; start it with --allowed-hosts {host_of(shown) or 'NAME'} to allow that name")  # fmt: skip
        body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
