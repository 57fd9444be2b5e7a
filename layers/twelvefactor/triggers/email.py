"""Inbound email: SES receipt checks, sender allowlist and MIME parsing (no I/O).

SES stores the raw message in S3 (the receipt rule's first action) and then invokes the Email
function with a receipt event that carries the verdicts and headers but not the body. The handler
checks the event here, fetches the raw MIME and hands it back here to turn into plain text.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core import context
from ..core.errors import TwelvefactorError
from ..core.replies import ApprovalReply

# The most text one email may add to a thread; beyond it the text is cut with a visible marker.
MAX_TEXT_CHARS = 20_000
# Larger raw messages (mostly attachments) are refused before they are read into memory.
MAX_RAW_BYTES = 10 * 1024 * 1024
# A References chain longer than this is not a conversation we started; we look no further back.
MAX_THREAD_CANDIDATES = 20
# RFC 5322's line limit. A header value is kept with the thread (its reply channel), so its size is
# bounded here: a huge Subject or References header must not push an item past DynamoDB's 400 KB.
MAX_HEADER_CHARS = 998
S3_PREFIX = "inbound/"


class RejectedEmail(TwelvefactorError):
    """An email we drop on purpose: failed verdicts, unknown sender, unusable content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the SES receipt event ---------------------------------------------------------------------
# Our own lenient models: Powertools' SesModel requires dmarcVerdict, which SES (and SAM's sample
# event) leave out when the sender's domain publishes no DMARC policy.


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Verdict(_Lenient):
    status: str


class SesReceipt(_Lenient):
    spam_verdict: Verdict = Field(alias="spamVerdict")
    virus_verdict: Verdict = Field(alias="virusVerdict")
    spf_verdict: Verdict = Field(alias="spfVerdict")
    dkim_verdict: Verdict = Field(alias="dkimVerdict")
    dmarc_verdict: Verdict | None = Field(default=None, alias="dmarcVerdict")


class SesCommonHeaders(_Lenient):
    sender: list[str] = Field(default_factory=list, alias="from")
    subject: str = ""


class SesMail(_Lenient):
    message_id: str = Field(alias="messageId", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    source: str
    common_headers: SesCommonHeaders = Field(alias="commonHeaders")


class SesNotification(_Lenient):
    mail: SesMail
    receipt: SesReceipt


class _SesRecord(_Lenient):
    ses: SesNotification


class _SesEvent(_Lenient):
    records: list[_SesRecord] = Field(alias="Records", min_length=1, max_length=1)


def parse_receipt(event: dict[str, Any]) -> SesNotification:
    try:
        return _SesEvent.model_validate(event).records[0].ses
    except ValidationError as exc:
        raise RejectedEmail(f"not an SES receipt event: {exc.error_count()} validation errors") from exc


def check_verdicts(receipt: SesReceipt) -> None:
    """Reject mail SES flagged: spam, virus, or failed SPF/DKIM (and DMARC, when SES evaluated it)."""
    checks = {
        "spam": receipt.spam_verdict,
        "virus": receipt.virus_verdict,
        "SPF": receipt.spf_verdict,
        "DKIM": receipt.dkim_verdict,
    }
    if receipt.dmarc_verdict is not None:
        checks["DMARC"] = receipt.dmarc_verdict
    failed = [name for name, verdict in checks.items() if verdict.status.upper() == "FAIL"]
    if failed:
        raise RejectedEmail(f"failed verdicts: {', '.join(failed)}")


def s3_key(message_id: str) -> str:
    """Where the receipt rule's S3 action stored the raw message."""
    return f"{S3_PREFIX}{message_id}"


# --- senders -----------------------------------------------------------------------------------


def parse_allowlist(allowed: str) -> frozenset[str]:
    """EmailSettings.allowed_senders ("a@x.com,@y.org") as lower-case entries; empty allows nobody."""
    return frozenset(entry.strip().lower() for entry in allowed.split(",") if entry.strip())


def sender_address(header_values: list[str]) -> str:
    """The one address in a From header; several (or none) is not a sender we can answer."""
    addresses = [address for _name, address in email.utils.getaddresses(header_values) if "@" in address]
    if len(addresses) != 1:
        raise RejectedEmail(f"expected one From address, got {len(addresses)}")
    return addresses[0].lower()


def check_sender(address: str, allowlist: frozenset[str]) -> None:
    domain = "@" + address.rpartition("@")[2]
    if address not in allowlist and domain not in allowlist:
        raise RejectedEmail(f"sender {address} is not allowed")


# --- the message itself ------------------------------------------------------------------------

_MESSAGE_ID = re.compile(rf"<[^<>\s]{{1,{MAX_HEADER_CHARS - 2}}}>")


@dataclass(frozen=True)
class InboundEmail:
    sender: str
    subject: str
    message_id: str  # with angle brackets, as in the header
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str
    auto_submitted: bool

    @property
    def thread_candidates(self) -> tuple[str, ...]:
        """Message-IDs that may belong to a known thread, most specific first."""
        seen: dict[str, None] = dict.fromkeys((*self.in_reply_to, *reversed(self.references)))
        return tuple(seen)[:MAX_THREAD_CANDIDATES]


def parse_mime(raw: bytes) -> InboundEmail:
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # what policy.default always builds
    message_id = _message_ids(message.get("Message-ID"))
    if not message_id:
        raise RejectedEmail("no Message-ID header")
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    return InboundEmail(
        sender=sender_address([str(value) for value in message.get_all("From", [])]),
        subject=str(message.get("Subject", "")).strip()[:MAX_HEADER_CHARS],
        message_id=message_id[0],
        in_reply_to=_message_ids(message.get("In-Reply-To"))[:MAX_THREAD_CANDIDATES],
        # The newest end of the chain: what thread_candidates reads and what a reply needs to thread.
        references=_message_ids(message.get("References"))[-MAX_THREAD_CANDIDATES:],
        text=clean_text(_body_text(message)),
        # RFC 3834: replies from robots (vacation notices, bounces) must not start a conversation.
        auto_submitted=auto != "no",
    )


def _message_ids(header: object) -> tuple[str, ...]:
    return tuple(_MESSAGE_ID.findall(str(header))) if header is not None else ()


def _body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    if not isinstance(content, str):
        return ""
    return html_to_text(content) if part.get_content_subtype() == "html" else content


class _TextExtractor(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})
    _SKIPPED = frozenset({"script", "style", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._quoting = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        # Mail clients put the quoted history in a blockquote: mark it like plain-text quoting.
        if tag == "blockquote":
            self._quoting += 1
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        if tag == "blockquote":
            self._quoting = max(0, self._quoting - 1)
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._quoting:
            data = "\n".join("> " + line for line in data.splitlines())
        self.parts.append(data)


def html_to_text(html: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return "".join(extractor.parts)


# A reply header may wrap onto a second line: "On Mon, 3 Jun 2024 at 10:00, Ann <ann@x.org>\nwrote:".
_ATTRIBUTION = re.compile(r"^\s*On\b.{0,300}?\bwrote:\s*$", re.IGNORECASE | re.DOTALL)
_HISTORY_MARKERS = re.compile(r"^\s*(-{2,}\s*Original Message\s*-{2,}|_{10,})\s*$", re.IGNORECASE)
# Outlook quotes without ">": a "From:" line followed by "Sent:" or "Date:" starts the history.
_OUTLOOK_HEADER = re.compile(r"^\s*From: .+\n\s*(Sent|Date): ", re.IGNORECASE)


def clean_text(text: str) -> str:
    """The new part of a reply: no quoted history, no signature, at most MAX_TEXT_CHARS."""
    kept: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        two_lines = line + "\n" + (lines[index + 1] if index + 1 < len(lines) else "")
        if line.rstrip() == "--" or _HISTORY_MARKERS.match(line) or _OUTLOOK_HEADER.match(two_lines):
            break  # "-- " starts the signature (RFC 3676); the rest is a forwarded/quoted history
        if _ATTRIBUTION.match(line) or (line.strip().startswith("On ") and _ATTRIBUTION.match(two_lines)):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return truncate("\n".join(kept).strip())


def truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """The text a thread keeps of one email: its beginning and its end (where the request usually
    is), the middle left out with a marker; the raw message stays in S3 under inbound/."""
    return context.truncate(text, limit, kept="the whole message is in the raw email as received")


# --- replies to an approval request ------------------------------------------------------------

_APPROVE_WORDS = frozenset({"approve", "approved", "yes", "lgtm"})
_REJECT_WORDS = frozenset({"reject", "rejected", "no", "deny", "denied"})


def parse_approval(text: str, *, by: str) -> ApprovalReply | None:
    """ "APPROVE looks good" / "REJECT not on a Friday": the first word decides, the rest is the comment.

    Returns None when the first word is neither, so an unclear reply never counts as a decision.
    """
    match = re.match(r"\s*([A-Za-z]+)[\s.,:;!-]*(.*)", text, re.DOTALL)
    if match is None:
        return None
    word, comment = match.group(1).lower(), match.group(2).strip()
    if word in _APPROVE_WORDS:
        return ApprovalReply(approved=True, comment=comment[:4_000], by=by)
    if word in _REJECT_WORDS:
        return ApprovalReply(approved=False, comment=comment[:4_000], by=by)
    return None
