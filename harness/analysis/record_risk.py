"""Colour a run's evaluation outputs by the teacher-only bridge-risk estimate (`harness analyze --run`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.analysis.risk_view import risk_panel, write_risk_html
from harness.models import load_model
from harness.pairs import get_pair
from harness.records import read_record
from harness.supervise import encode
from kdcore.errors import HarnessError
from trainers.batch import collate
from trainers.loop import hidden_rows, logits_fn


def risk_report(
    record_path: Path, results_dir: Path, out: Path, *, limit: int = 20, pairs_file: Path | None = None
) -> Path:
    """An HTML page of the first `limit` completions per benchmark of the run, each token coloured by the risk
    estimated from the pair's teacher distribution at that place."""
    try:
        record = read_record(record_path)
    except (OSError, ValueError, TypeError) as err:
        raise HarnessError(f"cannot read run record {record_path}: {err}") from None
    pair = get_pair(record.pair, pairs_file)
    teacher, tokenizer = load_model(pair.teacher, pair.dtype, pair.model_kwargs)
    panels = []
    for task, score in record.scores.items():
        if not score.samples:
            continue
        rows = [json.loads(line) for line in (results_dir / score.samples).read_text().splitlines()[:limit]]
        for row in rows:
            example = {
                "prompt_ids": encode(tokenizer, row["prompt"]),
                "completion_ids": encode(tokenizer, row["completion"]),
            }
            if not example["completion_ids"]:
                continue
            batch = collate([example], tokenizer.pad_token_id)
            with torch.no_grad():
                logits = logits_fn(teacher)(hidden_rows(teacher, batch))
            tokens = [tokenizer.decode([t]) for t in example["completion_ids"]]
            title = f"{task} #{row['doc_id']} (score {row['score']:g})"
            panels.append(risk_panel(title, tokens, logits, decode=lambda i: tokenizer.decode([i])))
    return write_risk_html(out, panels, f"{record.run_id}: estimated bridge risk")
