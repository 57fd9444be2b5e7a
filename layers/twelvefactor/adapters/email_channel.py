"""Email as a human channel (factors 7 and 11): answers go out through SES as replies in the thread.

`In-Reply-To` and `References` make every mail client file our message under the person's own
conversation, and the same headers on their answer lead the Email trigger back to the thread.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from email.message import EmailMessage
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ..core.channels import ChannelRef, EmailRef, Notification
from .ports import ChannelError

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

# Long conversations would grow References without bound; mail clients only need the recent tail.
_MAX_REFERENCES = 20
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv)\s*:\s*)+", re.IGNORECASE)


def reply_subject(subject: str) -> str:
    return "Re: " + (_REPLY_PREFIX.sub("", subject).strip() or "your request")


def instructions_for(notification: Notification) -> str:
    """How to answer by email; the Email trigger parses exactly these replies."""
    if notification.format == "approve_reject":
        return "Reply with APPROVE or REJECT as the first word, optionally followed by a comment."
    if notification.format == "yes_no":
        return "Reply with YES or NO, optionally followed by a comment."
    if notification.format == "multiple_choice" and notification.choices:
        options = "\n".join(f"  - {choice}" for choice in notification.choices)
        return f"Reply with one of:\n{options}"
    if notification.kind in ("question", "escalation"):
        return "Reply to this email to answer."
    return ""


def build_reply(ref: EmailRef, from_address: str, body: str) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = from_address
    message["To"] = ref.address
    message["Subject"] = reply_subject(ref.subject)
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=from_address.rpartition("@")[2] or None)
    message["In-Reply-To"] = ref.message_id
    chain = [*dict.fromkeys((*ref.references, ref.message_id))][-_MAX_REFERENCES:]
    message["References"] = " ".join(chain)
    # RFC 3834: vacation responders and other robots must not answer us (no mail loops).
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(body)
    return message


class EmailChannel:
    """Implements `HumanChannel` with SES v2 `SendEmail` (raw content, so we own every header)."""

    def __init__(self, ses: SESV2Client, *, from_address: str) -> None:
        self._ses = ses
        self._from_address = from_address

    def send(self, ref: ChannelRef, notification: Notification) -> None:
        if not isinstance(ref, EmailRef):
            raise ChannelError(f"EmailChannel cannot deliver to a {ref.kind} channel")
        instructions = instructions_for(notification)
        body = notification.text + (f"\n\n{instructions}" if instructions else "")
        self.say(ref, f"{body}\n\n(thread {notification.thread_id})")

    def say(self, ref: EmailRef, text: str) -> None:
        """A plain reply in the conversation (e.g. why an email could not be taken)."""
        message = build_reply(ref, self._from_address, text)
        try:
            self._ses.send_email(
                FromEmailAddress=self._from_address,
                Destination={"ToAddresses": [ref.address]},
                Content={"Raw": {"Data": message.as_bytes()}},
            )
        except (ClientError, BotoCoreError) as exc:
            raise ChannelError(f"SES SendEmail to {ref.address} failed: {exc}") from exc
