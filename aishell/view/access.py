"""Who the web view serves: a request from this host (loopback) that names this host
(its Host header) always; any other only with the configured token, as
`Authorization: Bearer TOKEN` or `?token=TOKEN`, compared in constant time. The token
comes from `web.token_env` or `web.token_file`, never from a value of the config, and
is never logged or stored."""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from aishell.config.checks import env_password
from aishell.config.models import Config
from aishell.errors import ConfigError, UsageError
from aishell.files import read_regular

TOKEN_LIMIT = 4096
# A request a proxy relayed: the proxy is local, the person is not.
FORWARDED = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def configured_token(config: Config) -> bytes | None:
    """The token remote requests must present; None when the config names none."""
    web = config.main.web
    if web.token_env:
        token = env_password(web.token_env, "The web view's token", "web.token_env", config.path)
        return _checked(token.strip(), f"the variable {web.token_env} (web.token_env)")
    if web.token_file:
        return _checked(_read_token_file(config.home / web.token_file), "web.token_file")
    return None


def _read_token_file(path: Path) -> str:
    try:
        text = read_regular(path, TOKEN_LIMIT, "The web view's token file", ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"The web view's token file {path} (web.token_file) is missing") from None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:  # whoever reads it can read every page from anywhere
        raise ConfigError(
            f"The web view's token file {path} is readable by group or others (mode "
            f"{mode:04o}); run `chmod 600 {path}`"
        )
    return text.decode("utf-8", errors="replace").strip()


def _checked(token: str, where: str) -> bytes:
    if len(token) < 16:
        raise ConfigError(f"The web view's token in {where} is shorter than 16 characters")
    return token.encode()


def is_loopback(host: str) -> bool:
    """Whether an address (or the name localhost) is this host's loopback."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def names_this_host(host_header: bytes | None) -> bool:
    """Whether a request's Host header names this host: a loopback address, localhost or
    this machine's own name; no header at all (HTTP/1.0) too, which no browser sends.
    A web page the person opens can point a name of its own at 127.0.0.1 (DNS
    rebinding), and its script then reads the view as this host: its Host gives it away."""
    if host_header is None:
        return True
    text = host_header.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:8765
        name, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest else None
    else:
        head, colon, tail = text.rpartition(":")
        name, port = (head, tail) if colon else (text, None)
    # A host and a port alone, as a browser sends it: `127.0.0.1:1@evil.com` names no host.
    if port and not (port.isascii() and port.isdigit()):
        return False
    name = name.rstrip(".")
    if is_loopback(name):
        return True
    # Its name as the system has it, never asked of DNS: a request waits on no resolver.
    own = socket.gethostname().lower().rstrip(".")
    return bool(name) and name in (own, own.partition(".")[0])


def check_binding(host: str, token: bytes | None) -> None:
    """Listening beyond loopback needs a token: without one, every remote request would
    be refused, or worse, a mistake would serve the fleet to the network."""
    if token is None and not is_loopback(host):
        raise UsageError(
            f"Refusing to listen on {host}: a host other than loopback needs a token "
            "(web.token_env or web.token_file in the config)"
        )


@dataclass(frozen=True)
class Verdict:
    """Whether a request is served; if not, the status and the line it is answered."""

    served: bool
    status: int = 200
    reason: str = ""
    by_query: bool = False  # the token came as ?token= (links on the page carry it on)


def judge(
    client: str | None,
    headers: list[tuple[bytes, bytes]],
    query_token: str | None,
    token: bytes | None,
) -> Verdict:
    """Serve a loopback client that no proxy relayed and that names this host; anyone
    else needs the token."""
    names = {name.lower() for name, _ in headers}
    if client is not None and is_loopback(client) and not names & set(FORWARDED):
        host = _host(headers)
        if names_this_host(host):
            return Verdict(True)
        if token is None:
            return Verdict(
                False,
                403,
                "Only requests naming this host are served (localhost, 127.0.0.1 or its "
                "own name); this one named another in its Host header",
            )
    if token is None:
        return Verdict(False, 403, "Only requests from this host are served")
    given, by_query = _bearer(headers), False
    if given is None and query_token is not None:
        given, by_query = query_token.encode(), True
    if given is None:
        return Verdict(False, 401, "A token is needed: Authorization: Bearer TOKEN")
    if not hmac.compare_digest(given, token):
        return Verdict(False, 403, "The token is not the configured one")
    return Verdict(True, by_query=by_query)


def _host(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"host":
            return value
    return None


def _bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
    return None
