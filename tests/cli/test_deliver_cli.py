"""`orbita deliver`, `orbita deliver status` and `orbita templates list|preview` as a user
runs them, against a real SMTP server on loopback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
sys.path.insert(0, str(Path(__file__).parents[1] / "services"))
from delivery_setup import queue_cart_emails, write_strategy
from loopback import smtp_server

from orbita.cli.main import app
from orbita.core.settings import Settings
from orbita.services.workspace import open_workspace

runner = CliRunner()


def orbita(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_deliver_then_status_then_preview(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert orbita("init", "-w", str(ws))[0] == 0
    with smtp_server() as (port, server):
        strategy = write_strategy(ws, port, unsubscribe_url='"https://shop.example.com/u/{token}"')
        with open_workspace(settings=Settings(workspace=ws)) as workspace:
            queue_cart_emails(workspace, strategy, ["ann", "bob"])
        code, out, err = orbita("deliver", "-w", str(ws), "--json")
        assert code == 0, err
        assert sorted(r.rcpt_tos[0] for r in server.messages) == [
            "ann@example.org",
            "bob@example.org",
        ]
    report = json.loads(out)
    assert (report["claimed"], report["sent"]) == (2, 2)

    code, out, _ = orbita("deliver", "status", "-w", str(ws), "--json")
    assert code == 0 and json.loads(out) == {"counts": {"sent": 2}, "unconfirmed": 0, "dead": []}

    code, out, _ = orbita("templates", "list", "-w", str(ws), "--json")
    assert code == 0
    listed = {row["name"]: row for row in json.loads(out)}
    assert listed["cart_reminder"]["variables"] == [
        "customer.first_name",
        "event.products",
    ]

    html = tmp_path / "preview.html"
    code, out, err = orbita(
        "templates", "preview", "cart_reminder", "--customer", "ann", "-w", str(ws),
        "--properties", '{"products": [{"name": "Scarf", "size": "S", "price": 12, "sku": "X"}]}',
        "--html-out", str(html),
    )  # fmt: skip
    assert code == 0, err
    assert "subject    Ann, your cart is waiting" in out
    assert "Scarf, size S: $12.00" in out
    assert "Scarf" in html.read_text()

    code, _, err = orbita(
        "templates", "preview", "cart_remindr", "--customer", "ann", "-w", str(ws)
    )
    assert code == 2 and "no template 'cart_remindr'" in err
    code, _, err = orbita("templates", "preview", "receipt", "--customer", "nobody", "-w", str(ws))
    assert code == 2 and "no customer 'nobody'" in err
    # Without the trigger's products the cart template cannot render: one line, exit 2.
    code, _, err = orbita(
        "templates", "preview", "cart_reminder", "--customer", "ann", "-w", str(ws)
    )
    assert code == 2 and "event.products is undefined" in err
