"""`orbita bounces serve|import|secret` and `orbita deliver retry` as a user runs them: real
mail to a real SMTP server, its bounce report mailed to the bounce mailbox process."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
sys.path.insert(0, str(Path(__file__).parents[1] / "services"))
from delivery_setup import queue_cart_emails, write_strategy
from dsn_samples import original_message, postfix_dsn
from loopback import SmtpRecorder, free_port, smtp_server
from sqlalchemy import select

from orbita.cli.main import app
from orbita.core.settings import Settings
from orbita.services.workspace import open_workspace
from orbita.store.state import suppressions

runner = CliRunner()
VERP = "bounces@bounces.example.com"


def orbita(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def suppressed(ws: Path) -> dict[str, str]:
    with (
        open_workspace(settings=Settings(workspace=ws)) as workspace,
        workspace.state.connect() as connection,
    ):
        return {row.address: row.reason for row in connection.execute(select(suppressions))}


def test_import_reports_and_retry_dead_letters(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert orbita("init", "-w", str(ws))[0] == 0
    recorder = SmtpRecorder(refuse={"bob@example.org": "550 5.7.1 refused for policy"})
    with smtp_server(recorder) as (port, server):
        strategy = write_strategy(ws, port, return_path=VERP)
        with open_workspace(settings=Settings(workspace=ws)) as workspace:
            queue_cart_emails(workspace, strategy, ["ann", "bob"])
        assert orbita("deliver", "-w", str(ws))[0] == 0
        [sent] = server.messages

        report = tmp_path / "ann.eml"
        report.write_bytes(
            postfix_dsn(original=sent.data, return_path=sent.mail_from, recipient="ann@example.org")
        )
        junk = tmp_path / "hello.eml"
        junk.write_bytes(original_message(to="shop@example.com", key="k"))
        code, out, err = orbita(
            "bounces", "import", str(report), str(junk), "-w", str(ws), "--json"
        )
        assert code == 0, err
        found = json.loads(out)
        assert found["counts"] == {"suppressed": 1}
        assert len(found["not_reports"]) == 1 and "hello.eml" in found["not_reports"][0]
        assert list(suppressed(ws)) == ["ann@example.org"]

        code, _, err = orbita("deliver", "retry", "-w", str(ws))
        assert code == 2 and "or --all" in err
        code, _, err = orbita("deliver", "retry", "999", "-w", str(ws))
        assert code == 2 and "not dead letters: 999" in err
        recorder.refuse.clear()
        code, out, _ = orbita("deliver", "retry", "--all", "-w", str(ws), "--json")
        assert code == 0 and json.loads(out) == {"requeued": 1}
        assert orbita("deliver", "-w", str(ws))[0] == 0
        assert [m.rcpt_tos for m in server.messages][1:] == [["bob@example.org"]]

    code, out, _ = orbita("bounces", "secret", "-w", str(ws))
    assert code == 0 and len(out.strip()) == 64


def test_bounce_mailbox_process_suppresses_what_it_receives(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert orbita("init", "-w", str(ws))[0] == 0
    with smtp_server() as (port, server):
        strategy = write_strategy(ws, port, return_path=VERP)
        with open_workspace(settings=Settings(workspace=ws)) as workspace:
            queue_cart_emails(workspace, strategy, ["cy"])
        assert orbita("deliver", "-w", str(ws))[0] == 0
        [sent] = server.messages
    mailbox_port = free_port()
    command = ["bounces", "serve", "-w", str(ws), "--port", str(mailbox_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "orbita.cli.main", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=ws,  # the strategy.yaml there names the VERP domain
    )
    try:
        deadline = time.monotonic() + 120  # a loaded machine imports slowly
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", mailbox_port)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise AssertionError(process.communicate()[1].decode()) from None
                time.sleep(0.1)
        with client:
            raw = postfix_dsn(
                original=sent.data, return_path=sent.mail_from, recipient="cy@example.org"
            )
            client.sendmail("", [sent.mail_from], raw)
            refused = client.sendmail("", ["x@other.example.org", sent.mail_from], raw)
            assert list(refused) == ["x@other.example.org"]  # not the VERP domain
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    assert "for bounces.example.com" in err.decode()
    assert suppressed(ws)["cy@example.org"].startswith("hard bounce: 5.1.1")
