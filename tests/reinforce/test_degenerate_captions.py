"""Degenerate synthetic captions of a tiny LightCap are re-drawn or counted, in state, manifest and summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_generate import samples_of
from tiny_models import NUM_AUGS, NUM_SYN, reinforce_config, save_collapsed_captioner

from edgevl.cli import main
from edgevl.errors import ConfigError
from edgevl.reinforce.caption_quality import RULES, degenerate_reason
from edgevl.reinforce.generate import reinforce
from edgevl.reinforce.verify import verify

KINDS = ("detected", "redrawn", "kept", *RULES)


def stored_degenerate(out: Path) -> int:
    """Degenerate captions in the `syn.json` members of all shards of `out`."""
    return sum(degenerate_reason(text) is not None
               for tar in sorted(out.glob("*.tar")) for members in samples_of(tar).values()
               for text in json.loads(members["syn.json"])["syn_text"])


def check_counts(out: Path, manifest: dict) -> dict[str, int]:
    """The manifest's degenerate-caption counts, checked against the shard states and the stored captions."""
    counts = manifest["captioners"][0]["degenerate_captions"]
    states = [json.loads((out / "_state" / f"{tar.stem}.json").read_text()) for tar in sorted(out.glob("*.tar"))]
    assert counts == {kind: sum(s["degenerate_captions"]["syn_text"][kind] for s in states) for kind in KINDS}
    assert counts["detected"] == counts["redrawn"] + counts["kept"] == sum(counts[rule] for rule in RULES)
    assert stored_degenerate(out) == counts["kept"]
    return counts


def test_reference_run_counts_degenerate_captions(reference):
    check_counts(*reference)


def test_collapsed_captioner_redraws_and_counts_degenerate_captions(tiny, tmp_path, capsys):
    collapsed = save_collapsed_captioner(tmp_path)
    out, first_shard = tmp_path / "cli", str(Path(tiny.data).parent / "00000.tar")
    args = ["reinforce", "run", "--data", first_shard, "--out", str(out),
            "--teachers", ",".join(tiny.teachers), "--captioner", collapsed, "--num-augs", str(NUM_AUGS),
            "--num-syn-captions", str(NUM_SYN), "--batch-size", "4", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    counts = check_counts(out, manifest)
    assert counts["redrawn"] > 0 and counts["kept"] > 0
    rules = ", ".join(f"{rule} {counts[rule]}" for rule in RULES if counts[rule])
    assert counts["dominant_token"] > 0  # the collapsed captioner repeats one word
    assert (f"syn_text: {counts['detected']} degenerate captions ({rules}), {counts['redrawn']} re-drawn, "
            f"{counts['kept']} kept (written as drawn)") in capsys.readouterr().out
    report = verify(out)
    assert report.ok and report.degenerate_captions == counts["kept"]
    assert main(["reinforce", "verify", str(out)]) == 0
    assert f"{counts['kept']} degenerate synthetic captions" in capsys.readouterr().out
    again = tmp_path / "api"
    reinforce(reinforce_config(tiny, again, data=first_shard, captioner=collapsed))
    assert (again / "00000000.tar").read_bytes() == (out / "00000000.tar").read_bytes()
    as_drawn = reinforce(reinforce_config(tiny, tmp_path / "as-drawn", data=first_shard,
                                          captioner=collapsed, caption_redraws=0))
    by_rule = {rule: counts[rule] for rule in RULES}
    assert check_counts(tmp_path / "as-drawn", as_drawn) == {"detected": counts["detected"], "redrawn": 0,
                                                             "kept": counts["detected"], **by_rule}


def test_a_run_started_without_the_check_resumes_only_without_redraws(tiny, reference, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(reference[0], copy)
    for state in (copy / "_state").glob("*.json"):
        old = {k: v for k, v in json.loads(state.read_text()).items() if k not in ("caption_redraws",
                                                                                  "degenerate_captions")}
        state.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"different settings \(caption_redraws: "):
        reinforce(reinforce_config(tiny, copy))
    manifest = reinforce(reinforce_config(tiny, copy, caption_redraws=0))
    assert manifest["captioners"][0]["degenerate_captions"] == dict.fromkeys(KINDS, 0)
    assert manifest["shards"] == reference[1]["shards"]


def test_negative_redraws_name_the_flag(tiny, tmp_path):
    with pytest.raises(ConfigError, match="--caption-redraws must be >= 0"):
        reinforce_config(tiny, tmp_path, caption_redraws=-1).check()
