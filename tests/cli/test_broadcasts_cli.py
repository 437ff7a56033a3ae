"""`orbita broadcasts …` as a user runs them: plan (with the sender's rules), send, list,
show, pause, resume, cancel, report; mistakes are one line and exit 2."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "services"))
from segment_helpers import identify, store

from orbita.cli.main import app
from orbita.core.settings import Settings
from orbita.services.workspace import open_workspace
from orbita.store.state import consents, suppressions

runner = CliRunner()
AT = datetime(2026, 3, 1, tzinfo=UTC)

STRATEGY = """workspace: shop
timezone: Europe/Kyiv
segments:
  subscribers: {trait: subscribed, eq: true}
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "shop@example.com"}
templates:
  sale:
    channel: email
    subject: "Spring sale"
    text: "Hi {{ customer.first_name }}, 20% off"
    variants: {B: {subject: "Spring sale, {{ customer.first_name }}"}}
broadcasts:
  spring:
    audience: subscribers
    template: sale
    variants: {A: {weight: 1}, B: {variant: B, weight: 1}}
    holdout: 10%
"""


def orbita(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_plan_send_pause_resume_cancel_report(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert orbita("init", "-w", str(ws))[0] == 0
    (ws / "strategy.yaml").write_text(STRATEGY)
    zones = ("Europe/Kyiv", "Asia/Tokyo")
    with open_workspace(settings=Settings(workspace=ws)) as workspace:
        store(
            workspace,
            *(
                identify(
                    f"u{i}",
                    AT,
                    email=f"u{i}@example.org",
                    first_name=f"U{i}",
                    subscribed=True,
                    timezone=zones[i % 2],
                )
                for i in range(40)
            ),
        )
        with workspace.state.begin() as connection:
            connection.execute(
                insert(suppressions),
                [{"kind": "email", "address": f"u{i}@example.org", "reason": "hard bounce",
                  "created_at": AT} for i in range(3)],
            )  # fmt: skip
            connection.execute(
                insert(consents),
                [{"customer_id": cid, "channel": "email", "topic": "marketing",
                  "granted": False, "source": "preference centre", "at": AT}
                 for cid in range(10, 14)],
            )  # fmt: skip

    code, out, err = orbita("broadcasts", "plan", "spring", "-w", str(ws), "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["audience"] == 40
    assert sum(plan["by_arm"].values()) + plan["holdout"] == 40
    assert set(plan["by_arm"]) == {"A", "B"}
    assert sum(plan["by_zone"].values()) == 40 - plan["holdout"]
    held = plan["excluded"]
    assert set(held) <= {"skipped: suppressed", "skipped: no consent"}
    assert 0 < sum(held.values()) <= 7
    assert plan["deliverable"] == 40 - plan["holdout"] - sum(held.values())
    sample_b = plan["samples"].get("B")
    assert sample_b is not None and sample_b["subject"].startswith("Spring sale, U")
    code, out, _ = orbita("broadcasts", "plan", "spring", "-w", str(ws))
    assert code == 0 and "held back by" in out and "Europe/Kyiv" in out
    code, out, _ = orbita("broadcasts", "list", "-w", str(ws), "--json")
    assert json.loads(out)[0]["latest"] is None  # a plan writes nothing

    code, out, err = orbita("broadcasts", "send", "spring", "-w", str(ws), "--json")
    assert code == 0, err
    sent = json.loads(out)
    assert sent["state"] == "sending" and sent["written"] == 40
    code, out, _ = orbita("broadcasts", "send", "spring", "-w", str(ws), "--json")
    assert json.loads(out)["written"] == 0

    code, out, _ = orbita("broadcasts", "pause", "spring", "-w", str(ws))
    assert code == 0 and "paused" in out
    code, out, _ = orbita("broadcasts", "show", "spring", "-w", str(ws), "--json")
    assert json.loads(out)["occurrences"][0]["state"] == "paused"
    code, out, _ = orbita("broadcasts", "resume", "spring", "-w", str(ws))
    assert code == 0 and "sending" in out
    code, out, _ = orbita("broadcasts", "cancel", "spring", "-w", str(ws))
    cancelled = 40 - sent["holdout"]
    assert code == 0 and f"{cancelled:,} messages not sent" in out

    code, out, _ = orbita("broadcasts", "report", "spring", "-w", str(ws), "--json")
    report = json.loads(out)
    assert report["state"] == "cancelled" and report["totals"]["sent"] == 0
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert arms["holdout"]["recipients"] == sent["holdout"]
    assert sum(a["statuses"].get("cancelled", 0) for a in arms.values()) == cancelled
    code, out, _ = orbita("broadcasts", "report", "spring", "-w", str(ws))
    assert code == 0 and "holdout" in out

    code, _, err = orbita("broadcasts", "plan", "autumn", "-w", str(ws))
    assert code == 2 and "no broadcast 'autumn'" in err and len(err.strip().splitlines()) == 1
    code, _, err = orbita("broadcasts", "pause", "spring", "-w", str(ws))
    assert code == 2 and "no occurrence being sent" in err


def test_plan_counts_who_the_strategys_send_rules_hold_back(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert orbita("init", "-w", str(ws))[0] == 0
    gated = STRATEGY + (
        "send_rules:\n"
        "  - name: credit score below 600\n"
        "    when: {trait: credit_score, lt: 600}\n"
        "    block: [sale]\n"
    )
    (ws / "strategy.yaml").write_text(gated)
    with open_workspace(settings=Settings(workspace=ws)) as workspace:
        store(
            workspace,
            *(
                identify(
                    f"u{i}",
                    AT,
                    email=f"u{i}@example.org",
                    first_name=f"U{i}",
                    subscribed=True,
                    credit_score=550 if i < 12 else 700,
                )
                for i in range(30)
            ),
        )

    code, out, err = orbita("broadcasts", "plan", "spring", "-w", str(ws), "--json")

    assert code == 0, err
    plan = json.loads(out)
    held_back = plan["excluded"]
    assert set(held_back) == {"skipped: send rule: credit score below 600"}
    # The 12 low scores less those of them in the holdout, who are sent nothing anyway.
    assert 8 <= held_back["skipped: send rule: credit score below 600"] <= 12
    assert plan["deliverable"] == 30 - plan["holdout"] - sum(held_back.values())
