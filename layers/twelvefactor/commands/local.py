"""``twelvefactor local up``: the whole application on this machine, until Ctrl-C.

moto server (DynamoDB, S3, SES, Lambda, Step Functions executing the real ASL), the template's API
routes on a local gateway, the handlers running in this process, a Slack Web API stand-in, the fake
deployment service and a language model: the embedded SmolLM2 (default, no key needed), or any
OpenAI-compatible provider (``--llm URL``, or OPENAI_BASE_URL/OPENAI_API_KEY/LLM_MODEL set).
``--provider bedrock`` runs the handlers in Bedrock mode: their boto3 reaches a Converse stand-in on
loopback (`twelvefactor.local.fake_bedrock`) that that model answers, so Bedrock runs offline too.

What Slack and SES would have shown is printed as it happens.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import textwrap
import threading
from typing import Any

from twelvefactor.commands.console import local_console
from twelvefactor.local.embedded_llm import EmbeddedLlmError
from twelvefactor.local.slack_standin import SlackCall
from twelvefactor.local.stack import (
    LocalStack,
    SentEmail,
    StackError,
    as_provider,
    check_llm,
    ensure_port_free,
    open_llm,
)
from twelvefactor.local.template import api_routes

EXIT_FAILED = 1
_EMAIL_POLL_SECONDS = 0.5


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the local stack and keep it running until Ctrl-C")
    up.add_argument("--port", type=int, default=3000, help="the API gateway's port (default 3000; 0: any)")
    up.add_argument("--moto-port", type=int, default=5000, help="the moto server's port (default 5000)")
    up.add_argument("--slack-port", type=int, default=0, help="the Slack stand-in's port (default: any)")
    up.add_argument("--services-port", type=int, default=0, help="the fake deployment service's port")
    up.add_argument(
        "--llm",
        help="embedded, or an OpenAI-compatible base URL (default: OPENAI_BASE_URL/OPENAI_API_KEY if set, "
        "else embedded)",
    )
    up.add_argument("--llm-port", type=int, default=0, help="the embedded model server's port")
    up.add_argument(
        "--provider",
        choices=["openai", "bedrock"],
        default="openai",
        help="the handlers' LLM adapter: openai (chat completions) or bedrock (Converse, through a "
        "loopback stand-in answered by the model above)",
    )
    up.add_argument(
        "--parameter",
        action="append",
        default=[],
        type=_parameter,
        metavar="NAME=VALUE",
        help="a template parameter, like sam deploy's --parameter-overrides (repeatable), e.g. "
        "AllowedEmailSenders=@ops.example.com for the email samples",
    )
    up.add_argument("--console-port", type=int, default=8080, help="the thread console's port (0: any)")
    up.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    up.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    # Ctrl-C and `kill` end the wait below, then every `with` block closes in order.
    previous = signal.signal(signal.SIGTERM, lambda _signal, _frame: stop.set())
    try:
        return _serve(args, stop)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 0
    except (StackError, EmbeddedLlmError) as error:
        print(f"twelvefactor local up: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace, stop: threading.Event) -> int:
    ensure_port_free(args.console_port, "the console")
    with (
        open_llm(args.llm, port=args.llm_port, say=lambda text: print(text, flush=True)) as served,
        as_provider(served, args.provider) as llm,
    ):
        if llm.kind == "provider":
            check_llm(served)
        print("Starting moto server, provisioning template.yaml's resources...", flush=True)
        stack = LocalStack(
            llm,
            moto_port=args.moto_port,
            api_port=args.port,
            slack_port=args.slack_port,
            services_port=args.services_port,
            log_level=args.log_level,
            parameters=dict(args.parameter),
            on_slack=lambda call: print(render_slack(call), flush=True),
        )
        with stack, local_console(stack.api_url, stack.llm.output_mode, args.console_port) as console_url:
            print(banner(stack, console_url), flush=True)
            shown = 0
            try:
                while not stop.wait(_EMAIL_POLL_SECONDS):
                    mails = stack.sent_emails()
                    for mail in mails[shown:]:
                        print(render_email(mail), flush=True)
                    shown = len(mails)
            except KeyboardInterrupt:
                pass
            print("\nStopping: executions, gateway, handlers, moto server...", file=sys.stderr, flush=True)
    print("stopped", file=sys.stderr)
    return 0


def _parameter(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def banner(stack: LocalStack, console_url: str) -> str:
    routes = "\n".join(f"      {route.method:<6} {route.path}" for route in api_routes(stack.template))
    exports = "\n".join(
        f"  export {name}={shlex.quote(value)}" for name, value in stack.client_environment().items()
    )
    api = stack.api_url
    launch_body = '{"agent": "deploybot", "message": "Can you deploy the backend?"}'
    return f"""
twelvefactor local stack is up. Ctrl-C stops it.

  Console (threads in a browser)        {console_url}
  API gateway (template.yaml's routes)  {api}
{routes}
  local AWS (moto server)               {stack.moto_url}
  LLM                                   {stack.llm.description or stack.llm.base_url}
  Slack Web API stand-in                {stack.slack.base_url}
  fake deployment service               {stack.services_url}

Point boto3, the AWS CLI, curl, `twelvefactor threads` and `twelvefactor invoke` at it
(the functions' own environment included):
{exports}

Then, in that shell:
  twelvefactor threads launch "Can you deploy the backend?" --follow
  twelvefactor threads respond <THREAD_ID> --approve
  curl -sS -X POST {api}/threads -H 'Content-Type: application/json' -d '{launch_body}'
  aws dynamodb scan --table-name {stack.physical_name("ThreadsTable")}
  aws stepfunctions list-executions --state-machine-arn {stack.state_machine_arn}

A Slack app_mention signed with this stack's signing secret (valid for 5 minutes, as Slack's are):
  {stack.slack_user.curl_example()}

What Slack and SES would have shown appears below.
"""


def render_slack(call: SlackCall) -> str:
    """A Slack Web API call as the person in the channel would have seen it."""
    arguments: dict[str, Any] = call.arguments
    where = f"#{arguments.get('channel', '?')}"
    if arguments.get("thread_ts"):
        where += f" (thread {arguments['thread_ts']})"
    verb = {
        "chat.postMessage": "posts",
        "chat.update": "updates its message",
        "chat.postEphemeral": f"tells only {arguments.get('user', '?')}",
    }.get(call.method, call.method)
    text = _unescape(str(arguments.get("text") or ""))
    lines = [f"[slack] {where} the app {verb}:", *_indent(text)]
    buttons = [
        element["text"]["text"]
        for block in arguments.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements", [])
        if element.get("type") == "button"
    ]
    if buttons:
        lines.append("    " + "  ".join(f"[ {label} ]" for label in buttons))
    return "\n".join(lines)


def render_email(mail: SentEmail) -> str:
    header = f"[email] SES sends from {mail.source} to {', '.join(mail.to)}: {mail.subject}"
    return "\n".join([header, *_indent(mail.text)])


def _indent(text: str) -> list[str]:
    wrapped = [
        line
        for paragraph in text.splitlines() or [""]
        for line in textwrap.wrap(paragraph, 100, initial_indent="    ", subsequent_indent="    ") or ["    "]
    ]
    return wrapped


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
