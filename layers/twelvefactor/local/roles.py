"""Each function of the local stack runs as its own role, with moto checking what that role may do.

On AWS a function's calls are signed with its execution role, and IAM refuses an action no policy of
that role allows. The local stack does the same: it transforms template.yaml as ``sam deploy`` does
(`transformed_template`), creates each generated role in moto with that role's inline policies,
assumes it, and runs the function's invocations with those credentials (`runtime.scoped`). It then
switches on moto's IAM access control (moto server's ``/moto-api/reset-auth``, the switch behind
``INITIAL_NO_AUTH_ACTION_COUNT``), so a missing grant fails locally, in ``make test``.

What moto's check enforces (moto 5.2, ``moto/iam/access_control.py``):
- every request must be signed by a known access key (an IAM user's, or an assumed role's with its
  session token), and the signature must match;
- the action must be allowed by an Allow statement of the caller's inline or attached policies, and
  an explicit Deny wins.

What it does not enforce, and so what the tests over the transformed template check instead:
- resources: moto authorises DynamoDB, Step Functions, SES, SQS and Lambda calls against the
  resource ``*`` (and S3 only against bucket/key ARNs), so statements are loaded with ``Resource: *``
  here, and which table, bucket prefix or state machine a grant names is checked in
  tests/integration/test_deployed_template.py;
- conditions, permission boundaries, service control policies, session policies, resource-based
  policies (the API's or SES's permission to invoke a function) and AWS managed policies (the
  generated roles' AWSLambdaBasicExecutionRole and AWSXrayWriteOnlyAccess: the local stack calls
  neither CloudWatch Logs nor X-Ray);
- presigned URLs: moto answers a presigned request with a 500 once access control is on (it looks
  for an Authorization header), so the stack serves those requests unchecked
  (`presigned_urls_unchecked`); the grant they rely on (the signer's s3:GetObject) is tested on the
  transformed template;
- actions named differently from their operation: moto checks ``dynamodb:TransactWriteItems`` and
  ``lambda:Invoke`` where IAM checks each item's ``PutItem``/``UpdateItem``/``ConditionCheckItem`` and
  ``lambda:InvokeFunction``. `moto_policy` adds moto's name wherever the role holds IAM's.

Two keys are fixed rather than generated, because the code that signs with them cannot be told
another: ``local``/``local`` (what `LocalStack.client_environment` prints and the stack's own set-up,
tests and CLI use) belongs to an administrator user; ``ak``/``sk``, with which moto's Step Functions
interpreter signs its Lambda invocations, belongs to a user holding the state machine role's policies.
moto makes up every key it issues, so these two are set on moto's in-process IAM model (one private
attribute pair, here only).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
import botocore.session

ADMIN_KEY = ("local", "local")
# moto.stepfunctions.parser.asl.utils.boto_client signs every service call of the interpreter with these.
INTERPRETER_KEY = ("ak", "sk")
# moto authorises an operation by its own name; IAM by another. Granted IAM actions -> moto's name.
_MOTO_ACTION_NAMES = {
    "dynamodb:TransactWriteItems": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"},
    "dynamodb:TransactGetItems": {"dynamodb:GetItem"},
    "lambda:Invoke": {"lambda:InvokeFunction"},
}


@dataclass(frozen=True)
class RoleCredentials:
    role_name: str
    access_key_id: str
    secret_access_key: str
    session_token: str

    def session(self, region: str) -> boto3.session.Session:
        # One botocore session per role, all sharing one loader: each would otherwise read and parse
        # the service models again (about 0.3 s per function at every stack start).
        core = botocore.session.Session()
        core.register_component("data_loader", _shared_loader())
        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=region,
            botocore_session=core,
        )


@cache
def _shared_loader() -> Any:
    return botocore.session.get_session().get_component("data_loader")


def moto_policy(document: Mapping[str, Any]) -> dict[str, Any]:
    """A policy document as moto can check it: every statement on ``Resource: *`` (moto checks no
    resource outside S3), and moto's own action names added where the statement grants IAM's."""
    statements = document["Statement"]
    statements = statements if isinstance(statements, list) else [statements]
    checked = []
    for statement in statements:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else list(actions)
        actions += [moto_name for moto_name, needs in _MOTO_ACTION_NAMES.items() if needs <= set(actions)]
        checked.append({"Effect": statement["Effect"], "Action": sorted(set(actions)), "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": checked}


def create_role(
    iam: Any, sts: Any, name: str, trust: Mapping[str, Any], policies: Mapping[str, Mapping[str, Any]]
) -> RoleCredentials:
    """Create the role with these inline policies and assume it (before access control is on: moto
    would check the trust policy's service principal against the caller, which it cannot)."""
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    for policy_name, document in policies.items():
        iam.put_role_policy(
            RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(moto_policy(document))
        )
    arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    assumed = sts.assume_role(RoleArn=arn, RoleSessionName=name[:64], DurationSeconds=43200)["Credentials"]
    return RoleCredentials(name, assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"])


def create_user_with_key(
    iam: Any,
    name: str,
    key: tuple[str, str],
    policies: Mapping[str, Mapping[str, Any]],
    account_id: str,
) -> None:
    """An IAM user whose access key is ``key``, holding these inline policies."""
    from moto.iam.models import iam_backends  # noqa: PLC0415 - the one private use, see the module doc

    iam.create_user(UserName=name)
    for policy_name, document in policies.items():
        iam.put_user_policy(
            UserName=name, PolicyName=policy_name, PolicyDocument=json.dumps(moto_policy(document))
        )
    issued = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    user = iam_backends[account_id]["aws"].get_user(name)
    [access_key] = [found for found in user.access_keys if found.access_key_id == issued]
    access_key.access_key_id, access_key.secret_access_key = key


ADMINISTRATOR = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def set_access_control(moto_url: str, initial_no_auth_action_count: float) -> float:
    """moto's switch (``INITIAL_NO_AUTH_ACTION_COUNT``): 0 checks every request from now on, ``inf``
    none. Returns the previous value, to put back."""
    import httpx  # noqa: PLC0415

    response = httpx.post(
        f"{moto_url}/moto-api/reset-auth", content=str(initial_no_auth_action_count).encode(), timeout=10
    )
    response.raise_for_status()
    return float(response.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


_presigned = threading.local()


def presigned_urls_unchecked(app: Callable[..., Any]) -> Callable[..., Any]:
    """The moto server's WSGI app, marking a presigned S3 request (signed in its query string, with no
    Authorization header) so that `unchecked_while_presigned` lets it through, on this thread only."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "X-Amz-Signature=" not in environ.get("QUERY_STRING", "") or "HTTP_AUTHORIZATION" in environ:
            return app(environ, start_response)
        _presigned.active = True
        try:
            return list(app(environ, start_response))  # the whole answer, made while marked
        finally:
            _presigned.active = False

    return serve


@contextmanager
def unchecked_while_presigned() -> Iterator[None]:
    """Skip moto's access check for requests `presigned_urls_unchecked` marked (a private moto
    method, wrapped while the stack runs; a moto upgrade that renames it fails the stack's start)."""
    from moto.core.authorization import ActionAuthenticatorMixin  # noqa: PLC0415

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def check(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        if getattr(_presigned, "active", False):
            return
        original(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = check  # type: ignore[method-assign]
    try:
        yield
    finally:
        ActionAuthenticatorMixin._authenticate_and_authorize_action = original  # type: ignore[method-assign]
