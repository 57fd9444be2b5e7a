"""Inbound email: SES verdicts, the sender allowlist, MIME parsing and reply parsing."""

from __future__ import annotations

import copy
import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from twelvefactor.triggers import email as inbound

EVENTS = Path(__file__).resolve().parents[2] / "events"


def receipt_event(name: str = "email-receipt.json") -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def mime(
    body: str,
    *,
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = "Ann Operator <ann@ops.example.com>"
    message["To"] = "agent@agents.example.com"
    message["Subject"] = "Re: Deploy web"
    message["Message-ID"] = "<reply-1@mail.example.com>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message.as_bytes()


# --- the receipt -------------------------------------------------------------------------------


def test_the_sample_receipt_without_dmarc_verdict_is_accepted() -> None:
    # Given SES's receipt shape as SAM generates it: no dmarcVerdict at all
    event = receipt_event()
    assert "dmarcVerdict" not in event["Records"][0]["ses"]["receipt"]
    # When it is parsed and its verdicts are checked, Then it passes
    parsed = inbound.parse_receipt(event)
    inbound.check_verdicts(parsed.receipt)
    assert parsed.mail.message_id == "o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1x"
    assert parsed.receipt.dmarc_verdict is None
    assert inbound.s3_key(parsed.mail.message_id) == "inbound/o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1x"


@pytest.mark.parametrize(
    "verdict", ["spamVerdict", "virusVerdict", "spfVerdict", "dkimVerdict", "dmarcVerdict"]
)
def test_a_failed_verdict_rejects_the_mail(verdict: str) -> None:
    # Given a receipt where SES marked one check as FAIL
    event = copy.deepcopy(receipt_event())
    event["Records"][0]["ses"]["receipt"][verdict] = {"status": "FAIL"}
    # When the verdicts are checked, Then the mail is rejected naming that check
    name = verdict.removesuffix("Verdict")
    with pytest.raises(inbound.RejectedEmail, match=f"(?i){name}"):
        inbound.check_verdicts(inbound.parse_receipt(event).receipt)


@pytest.mark.parametrize("status", ["GRAY", "PROCESSING_FAILED", "DISABLED"])
def test_verdicts_that_are_not_failures_pass(status: str) -> None:
    event = copy.deepcopy(receipt_event())
    event["Records"][0]["ses"]["receipt"]["spfVerdict"] = {"status": status}
    inbound.check_verdicts(inbound.parse_receipt(event).receipt)


def test_the_spam_sample_is_rejected() -> None:
    with pytest.raises(inbound.RejectedEmail, match="spam"):
        inbound.check_verdicts(inbound.parse_receipt(receipt_event("email-spam.json")).receipt)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": []},
        {"Records": [{"ses": {"mail": {"messageId": "../../etc/passwd"}}}]},
    ],
)
def test_anything_but_an_ses_receipt_is_rejected(event: dict[str, Any]) -> None:
    with pytest.raises(inbound.RejectedEmail, match="not an SES receipt"):
        inbound.parse_receipt(event)


def test_a_message_id_that_would_escape_the_s3_prefix_is_rejected() -> None:
    event = copy.deepcopy(receipt_event())
    event["Records"][0]["ses"]["mail"]["messageId"] = "../threads/secret"
    with pytest.raises(inbound.RejectedEmail):
        inbound.parse_receipt(event)


# --- senders -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("ann@ops.example.com", True),  # listed address
        ("bob@trusted.example.org", True),  # listed domain
        ("eve@example.com", False),
        ("mallory@evil.trusted.example.org", False),  # a subdomain is another domain
        ("trusted.example.org@evil.com", False),
    ],
)
def test_the_allowlist_takes_addresses_and_domains(address: str, allowed: bool) -> None:
    allowlist = inbound.parse_allowlist(" Ann@Ops.Example.com , @trusted.example.org,")
    if allowed:
        inbound.check_sender(address, allowlist)
    else:
        with pytest.raises(inbound.RejectedEmail, match="not allowed"):
            inbound.check_sender(address, allowlist)


def test_an_empty_allowlist_allows_nobody() -> None:
    with pytest.raises(inbound.RejectedEmail):
        inbound.check_sender("ann@ops.example.com", inbound.parse_allowlist(""))


def test_the_sender_is_the_single_from_address_lower_cased() -> None:
    assert inbound.sender_address(["Ann Operator <Ann@Ops.Example.com>"]) == "ann@ops.example.com"
    with pytest.raises(inbound.RejectedEmail, match="one From"):
        inbound.sender_address(["a@x.com, b@y.com"])
    with pytest.raises(inbound.RejectedEmail, match="one From"):
        inbound.sender_address([])


# --- MIME --------------------------------------------------------------------------------------


def test_quoted_history_and_signature_are_stripped() -> None:
    # Given a typical reply: new text, the client's attribution, the quoted message, a signature
    body = (
        "Use the canary strategy.\n"
        "Keep an eye on errors.\n"
        "\n"
        "On Mon, 3 Jun 2024 at 09:01, Twelvefactor Agent <agent@agents.example.com>\n"
        "wrote:\n"
        "> Which strategy?\n"
        "> \n"
        "-- \n"
        "Ann\n"
    )
    # When it is parsed, Then only the new text remains
    parsed = inbound.parse_mime(mime(body))
    assert parsed.text == "Use the canary strategy.\nKeep an eye on errors."


def test_interleaved_quotes_are_dropped_and_answers_kept() -> None:
    body = "> Which service?\nweb\n> Which version?\n1.4.2\n"
    assert inbound.parse_mime(mime(body)).text == "web\n1.4.2"


@pytest.mark.parametrize(
    "history",
    [
        "-----Original Message-----\nFrom: agent@agents.example.com\n",
        "From: Twelvefactor Agent <agent@agents.example.com>\nSent: Monday, June 3, 2024 09:01\n",
        "________________________________\nFrom: agent\n",
        "On Monday, June 3, 2024, Agent <agent@agents.example.com> wrote:\n",
    ],
)
def test_outlook_and_other_history_markers_end_the_new_text(history: str) -> None:
    parsed = inbound.parse_mime(mime(f"Approve it.\n\n{history}Which strategy?\n"))
    assert parsed.text == "Approve it."


def test_a_from_line_in_the_new_text_is_kept() -> None:
    parsed = inbound.parse_mime(mime("From: the release notes, web 1.4.2 fixes login.\nShip it.\n"))
    assert parsed.text == "From: the release notes, web 1.4.2 fixes login.\nShip it."


def test_text_plain_is_preferred_over_html() -> None:
    parsed = inbound.parse_mime(mime("plain words", html="<p>html words</p>"))
    assert parsed.text == "plain words"


def test_an_html_only_mail_is_reduced_to_its_text_without_quoted_history() -> None:
    # Given an HTML-only reply whose client quoted the history in a blockquote
    message = EmailMessage()
    message["From"] = "ann@ops.example.com"
    message["Message-ID"] = "<h1@mail.example.com>"
    message.set_content(
        "<html><head><style>p{color:red}</style></head><body>"
        "<p>Deploy&nbsp;it &amp; tell me.</p><script>alert(1)</script>"
        "<blockquote><p>Which strategy?</p></blockquote></body></html>",
        subtype="html",
    )
    # When it is parsed, Then the text is what a reader sees, minus styles, scripts and the quote
    assert inbound.parse_mime(message.as_bytes()).text == "Deploy\xa0it & tell me."


def test_threading_headers_are_read_and_ordered_most_specific_first() -> None:
    # Given a reply whose References header is folded over two lines, as long ones are
    raw = mime("ok", headers={"In-Reply-To": "<agent-2@agents.example.com>"}).replace(
        b"MIME-Version",
        b"References: <launch-1@mail.example.com> <agent-1@agents.example.com>\n"
        b" <agent-2@agents.example.com>\nMIME-Version",
    )
    parsed = inbound.parse_mime(raw)
    assert parsed.message_id == "<reply-1@mail.example.com>"
    assert parsed.references == (
        "<launch-1@mail.example.com>",
        "<agent-1@agents.example.com>",
        "<agent-2@agents.example.com>",
    )
    assert parsed.thread_candidates == (
        "<agent-2@agents.example.com>",
        "<agent-1@agents.example.com>",
        "<launch-1@mail.example.com>",
    )


def test_the_sample_messages_parse() -> None:
    launch = inbound.parse_mime((EVENTS / "email-receipt.eml").read_bytes())
    reply = inbound.parse_mime((EVENTS / "email-reply.eml").read_bytes())
    assert launch.text == "Please deploy web 1.4.2 to staging.\n\nThanks,"
    assert launch.sender == "ann@ops.example.com" and launch.in_reply_to == ()
    assert reply.text == "APPROVE go ahead, the change window is open."
    assert "<CAF-launch-0001@mail.example.com>" in reply.thread_candidates


def test_a_huge_body_keeps_its_beginning_and_its_end_with_a_visible_marker() -> None:
    # Given a 5 MB body whose last line asks for something
    parsed = inbound.parse_mime(mime("x" * 5_000_000 + "\nPlease deploy v1.2.3 to staging."))
    # Then the thread gets at most the cap: the beginning, a note saying how much of the middle was
    # left out and where the whole is, and the end with the request
    half = inbound.MAX_TEXT_CHARS // 2
    left_out = 5_000_000 + 33 - inbound.MAX_TEXT_CHARS
    assert parsed.text.startswith("x" * half + " … [")
    assert f"[{left_out} characters left out here; the whole message is in the raw email" in parsed.text
    assert parsed.text.endswith("Please deploy v1.2.3 to staging.")
    assert len(parsed.text) < inbound.MAX_TEXT_CHARS + 100


def test_automatic_replies_are_recognised() -> None:
    assert inbound.parse_mime(
        mime("Out of office", headers={"Auto-Submitted": "auto-replied"})
    ).auto_submitted
    assert not inbound.parse_mime(mime("hi", headers={"Auto-Submitted": "no"})).auto_submitted
    assert not inbound.parse_mime(mime("hi")).auto_submitted


def test_a_mail_without_message_id_is_rejected() -> None:
    message = EmailMessage()
    message["From"] = "ann@ops.example.com"
    message.set_content("hi")
    with pytest.raises(inbound.RejectedEmail, match="Message-ID"):
        inbound.parse_mime(message.as_bytes())


# --- approval replies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "approved", "comment"),
    [
        ("APPROVE", True, ""),
        ("approved - the window is open", True, "the window is open"),
        ("Yes, go ahead.\nThanks", True, "go ahead.\nThanks"),
        ("REJECT: not on a Friday", False, "not on a Friday"),
        ("no", False, ""),
    ],
)
def test_approval_replies_are_read_from_the_first_word(text: str, approved: bool, comment: str) -> None:
    reply = inbound.parse_approval(text, by="ann@ops.example.com")
    assert reply is not None
    assert (reply.approved, reply.comment, reply.by) == (approved, comment, "ann@ops.example.com")


@pytest.mark.parametrize("text", ["", "Maybe later", "I approve", "approvedish"])
def test_an_unclear_reply_is_no_decision(text: str) -> None:
    assert inbound.parse_approval(text, by="ann@ops.example.com") is None
