"""MIME built straight to bytes: the stdlib `email` package takes about 2.2 ms for a 20 KB
message here, more than sending it; this takes a small fraction of that."""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr


def encode_header(value: str) -> str:
    """ASCII as is; anything else as an RFC 2047 encoded word. Line breaks never pass."""
    value = " ".join(value.split())
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def encode_address(value: str) -> str:
    name, address = parseaddr(value)
    if not name:
        return address or value
    return formataddr((" ".join(name.split()), address), charset="utf-8")


def _qp(text: str) -> bytes:
    body = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    return binascii.b2a_qp(body, istext=True, header=False)


def _part(kind: str, text: str) -> bytes:
    return (
        f"Content-Type: text/{kind}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + _qp(text)


def build_message(
    *,
    headers: Sequence[tuple[str, str]],
    text: str | None,
    html: str | None,
    boundary: str,
) -> bytes:
    """An email: `headers` (already encoded), then text, HTML or both as alternatives."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head += "MIME-Version: 1.0\r\n"
    if text is not None and html is not None:
        return (
            (
                head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\n"
            ).encode()
            + _part("plain", text)
            + f"\r\n--{boundary}\r\n".encode()
            + _part("html", html)
            + f"\r\n--{boundary}--\r\n".encode()
        )
    kind, body = ("html", html) if html is not None else ("plain", text or "")
    return head.encode() + _part(kind, body) + b"\r\n"


def date_header(at: datetime) -> str:
    return format_datetime(at, usegmt=True)
