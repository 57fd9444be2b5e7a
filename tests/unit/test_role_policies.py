"""What the local stack loads into moto for a role: the template's actions, in the form moto checks."""

from __future__ import annotations

from twelvefactor.local.roles import moto_policy


def test_statements_keep_their_actions_on_every_resource() -> None:
    # Given a statement scoped to a table (moto authorises DynamoDB calls against "*" only)
    document = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "dynamodb:Query",
                "Resource": "arn:aws:dynamodb:us-east-1:1:table/t",
            }
        ]
    }
    # When it is made moto-checkable, Then the action stays and the resource becomes "*"
    assert moto_policy(document)["Statement"] == [
        {"Effect": "Allow", "Action": ["dynamodb:Query"], "Resource": "*"}
    ]


def test_moto_names_are_added_only_where_iam_would_allow_the_call() -> None:
    # Given one statement holding every action a transaction's items need, one missing UpdateItem,
    # and the state machine's LambdaInvokePolicy
    full = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"]
    statements = [
        {"Effect": "Allow", "Action": full, "Resource": "x"},
        {"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:ConditionCheckItem"], "Resource": "x"},
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "x"},
    ]
    # When they are made moto-checkable
    checked = moto_policy({"Statement": statements})["Statement"]
    # Then moto's TransactWriteItems is granted only with all three, and lambda:Invoke with InvokeFunction
    assert "dynamodb:TransactWriteItems" in checked[0]["Action"]
    assert "dynamodb:TransactWriteItems" not in checked[1]["Action"]
    assert checked[2]["Action"] == ["lambda:Invoke", "lambda:InvokeFunction"]
